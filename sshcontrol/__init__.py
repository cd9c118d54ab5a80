"""sshcontrol: an MCP control plane for SSH servers."""
