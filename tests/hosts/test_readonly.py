"""The read-only classifier (hosts/readonly.py): fast, without a host.

Besides fixed corpora, a property runs every generated line the classifier lets through in a
real bash and a real dash (the two shells sshcontrol's commands run in) inside a scratch
directory, and checks that nothing there was created or changed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts.readonly import commands, explicitly_allowed, refusal

REFUSED = [
    ("echo x >f", "output redirection '>' to 'f'"),
    ("echo x>f", "output redirection '>' to 'f'"),
    ("echo x 1>f", "output redirection '1>'"),
    ("echo x 12>f", "output redirection '12>'"),
    ("echo x>>f", "output redirection '>>'"),
    ("echo x >|f", "output redirection '>|'"),
    ("echo x &>f", "output redirection '&>'"),
    ("echo x &>>f", "output redirection '&>>'"),
    ("echo x <>f", "output redirection '<>'"),
    ("echo x >&f", "output redirection '>&' to 'f'"),
    ("echo x 2>&1 >f", "output redirection '>' to 'f'"),
    ("echo x > /dev/null; echo y > f", "to 'f'"),
    ("echo x >/dev/null2", "to '/dev/null2'"),
    (">/dev/../tmp/f", "to '/dev/../tmp/f'"),
    ("echo >$'/dev/null'", "to '$'/dev/null''"),
    ("echo > ~/x", "to '~/x'"),
    ("echo > ${HOME}", "to '${HOME}'"),
    ("echo > /dev/nul?", "to '/dev/nul?'"),
    ("echo > f\\\n", "to 'f"),
    ("echo >\\\nf", "to 'f'"),
    ("echo x >", "redirection '>' without a target"),
    ("echo x > (f)", "redirection '>' without a target"),
    ("echo $(id)", "command substitution '$(...)'"),
    ('echo "$(id)"', "command substitution '$(...)'"),
    ("echo `id`", "command substitution with backticks"),
    ("echo $((1))", "arithmetic expansion '$((...))'"),
    ("echo $[1]", "arithmetic expansion '$[...]'"),
    ("echo ${X:-$(id)}", "parameter expansion '${X:-$(id)}'"),
    ("echo ${!X}", "parameter expansion"),
    ("cat <(ls)", "process substitution '<(...)'"),
    ("ls >(cat)", "process substitution '>(...)'"),
    ("X=1", "variable assignment 'X=1'"),
    ("PATH=/tmp ls", "variable assignment"),
    ("a[$(id)]=1", "command substitution"),
    ("f() { ls; }", "'('"),
    ("(ls)", "'('"),
    ("{ ls; }", "shell keyword '{'"),
    ("if ls; then ls; fi", "shell keyword 'if'"),
    ("for f in a; do ls; done", "shell keyword 'for'"),
    ("! ls", "shell keyword '!'"),
    ("time ls", "shell keyword 'time'"),
    ("case a in a) ls;; esac", "')'"),
    ("echo 'x", "unbalanced single quote"),
    ('echo "x', "unbalanced double quote"),
    ("echo $'x", "unbalanced single quote"),
    ("$X", "command name '$X' that is not a plain word"),
    ("'ls'", "command name ''ls'' that is not a plain word"),
    ("l*", "command name 'l*'"),
    ("./ls", "given by a path outside the system directories"),
    ("/tmp/cat", "given by a path outside the system directories"),
    ("{fd}>f", "named descriptor"),
    ("cat <<EOF\n$(id)\nEOF", "here-document with expansions"),
    ("cat <<EOF\n$\\\n(id)\nEOF", "here-document with expansions"),
    ("cat <<EOF\n`id`\nEOF", "here-document with expansions"),
    ("cat <<<x <<-E\n\tE\n>f", "output redirection '>' to 'f'"),
    ("cat <<'a b'\nx\na b", "here-document delimiter"),
    ("tee f", "'tee'"),
    ("/usr/bin/tee f", "'tee'"),
    ("ls | tee f", "'tee'"),
    ("t\\\nee f", "'tee'"),
    ("dd of=f", "'dd'"),
    ("sed -n p f", "'sed'"),
    ("awk 1 f", "'awk'"),
    ("xargs ls", "'xargs'"),
    ("nice ls", "'nice'"),
    ("timeout 1 ls", "'timeout'"),
    ("command ls", "'command'"),
    ("exec ls", "'exec'"),
    ("eval ls", "'eval'"),
    (". ./x", "'.'"),
    ("source x", "'source'"),
    ("bash -c ls", "'bash'"),
    ("sh -c ls", "'sh'"),
    ("python3 -c 1", "'python3'"),
    ("history -w", "'history'"),
    ("env ls", "env with arguments"),
    ("find . -delete", "find -delete"),
    ("find . -exec rm {} +", "find with an expanded argument"),
    ("find . -exec rm x ;", "find -exec"),
    ("find . -fprintf f %p", "find -fprintf"),
    ("find * -print", "find with an expanded argument '*'"),
    ("sort -o f", "sort -o"),
    ("sort -ro f", "sort -ro"),
    ("sort --out f", "sort --out"),
    ("sort --compress-prog=sh x", "sort --compress-prog=sh"),
    ("uniq a b", "uniq with a second operand"),
    ("less -Of x", "less -Of"),
    ("less --log-file=f x", "less --log-file=f"),
    ("less +s x", "less +s"),
    ("tree -o f", "tree -o"),
    ("tree -R -H . x", "tree -R"),
    ("tree -ao f", "tree -ao"),
    ("date -s 1", "date -s"),
    ("date --set=1", "date --set=1"),
    ("printf -v x 1", "printf -v"),
    ("file -C -m x", "file -C"),
    ("hostname evil", "hostname evil"),
    ("systemctl status ssh", "'systemctl' is not known to only read"),
]

ALLOWED = [
    "ls",
    "ls -la /etc | grep -c host && wc -l /etc/hostname",
    "echo x > /dev/null",
    'echo x > "/dev/null"',
    "echo x 2>/dev/null >>/dev/null &>/dev/null",
    "echo x 2>&1 1>&2 3>&- <&0",
    "cat < /etc/hostname",
    "cat <<<word",
    "cat <<'EOF'\n$(id) > f\nEOF\nls",
    "cat <<-EOF\n\tplain text\n\tEOF",
    "cat <<EOF\nplain\nEOF",
    'echo "$HOME" ${HOME} $1 $? $$ "a > b" \'c > d\'',
    "echo a # > f",
    "echo x\\\ny",
    "/usr/bin/cat /etc/hostname",
    "find /var/log -name '*.log' -newer /etc/hostname -print",
    "sort -r -k2 f",
    "uniq -c f",
    "less -N f",
    "date +%F",
    "printf '%s\\n' a",
    "env",
    "hostname -f",
    "uptime; id; whoami; df -h; free -m; ps aux",
]


@pytest.mark.parametrize(("command", "construct"), REFUSED, ids=[c for c, _ in REFUSED])
def test_it_refuses_what_could_write_naming_the_construct(command: str, construct: str) -> None:
    message = refusal(command)
    assert message.startswith("a read-only grant refuses "), (command, message)
    assert construct in message, (command, message)


@pytest.mark.parametrize("command", ALLOWED)
def test_it_lets_readers_through(command: str) -> None:
    assert refusal(command) == ""


def test_it_reads_commands_as_the_shell_does() -> None:
    read = commands("ca\\\nt 'a b'\"c\"d 2>/dev/null | grep -v x; ls")
    assert [[w.text for w in c.words] for c in read] == [["cat", "a bcd"], ["grep", "-v", "x"], ["ls"]]
    assert read[0].redirections[0][0] == "2>" and read[0].redirections[0][1].text == "/dev/null"


def test_it_lets_an_admin_name_an_unknown_command_but_never_a_writer() -> None:
    assert explicitly_allowed("systemctl", ["systemctl status .*"])
    assert explicitly_allowed("systemctl", [r"^systemctl\b.*"])
    assert not explicitly_allowed("systemctl", ["systemctlx( .*)?", "(ls|systemctl)( .*)?"])
    assert refusal("systemctl status ssh", ["systemctl status .*"]) == ""
    assert "'tee'" in refusal("tee f", ["tee( .*)?"])
    assert "output redirection" in refusal("systemctl status > f", ["systemctl status .*"])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \t\n\\'\"$`(){}<>|&;#*~=-0123456789abcdefx/")), max_size=40))
def test_it_answers_any_text_without_crashing(text: str) -> None:
    assert isinstance(refusal(text), str)


# --- the property against real shells ---------------------------------------------------------

NAMES = [
    "echo",
    "cat",
    "ls",
    "sort",
    "uniq",
    "find",
    "tee",
    "touch",
    "printf",
    "head",
    "env",
    "xargs",
    "sed",
    "file",
]
ARGS = [
    "x",
    "f",
    "f0",
    "-o",
    "-of",
    "--output=f",
    "-fprint",
    "-delete",
    "'a b'",
    '"$HOME"',
    "-i",
    "s/a/b/",
    ".",
    # "--" as an option's argument, and $'...' that dash ends elsewhere (attacks found once)
    "--",
    "-T",
    "-C",
    "$'\\'",
]
REDIRECTIONS = [
    ">f",
    ">>f",
    ">|f",
    "&>f",
    "<>f",
    "2>f",
    "1>f",
    ">/dev/null",
    "2>&1",
    "<f0",
    ">&f",
    "3<>f",
    "> /dev/null",
    '>"/dev/null"',
    ">/dev/null2",
    "<<<x",
    ">\\\nf",
    "> f0",
    "'>'f",
    # quoting, comments, continuations and here-documents, where a lexer and a shell could disagree
    "\\>f",
    '"a>b"',
    "#",
    "a#>f",
    "\\\n#>f",
    " \\\n#>f",
    "<<E\nx\nE",
    "<<'E'\n$(touch f) >f\nE",
    "<<-E\n\tE\n>f",
    "<<E\nE \n>f\nE",
]
SEPARATORS = [";", " && ", " || ", " | ", "\n", " ", "\\\n", " & "]
SHELLS = [shell for shell in ("bash", "dash") if shutil.which(shell)]

simple = st.builds(
    lambda name, rest: " ".join([name, *rest]),
    st.sampled_from(NAMES),
    st.lists(st.sampled_from(ARGS + REDIRECTIONS), max_size=4),
)
structured = st.builds(
    lambda first, more: first + "".join(sep + cmd for sep, cmd in more),
    simple,
    st.lists(st.tuples(st.sampled_from(SEPARATORS), simple), max_size=3),
)
# A reader followed by shell punctuation at random: where quoting and escapes are hardest to read.
punctuated = st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(["echo ", "cat f0 ", "ls ", "echo x"]),
    st.text(alphabet=st.sampled_from(list(" \t\n\\'\"$<>&|;#-fE012x")), max_size=25),
)
lines = st.one_of(structured, punctuated)


@pytest.mark.skipif(len(SHELLS) < 2, reason="needs bash and dash")
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=lines)
def test_it_never_lets_through_a_line_that_writes_in_a_real_shell(tmp_path: Path, line: str) -> None:
    if refusal(line):
        return
    for shell in SHELLS:
        scratch = tmp_path / shell
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        (scratch / "f0").write_text("a\n")
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch), "LC_ALL": "C"}
        # As sshcontrol runs it: eval in the login shell (bash) or sh -c under sudo (dash).
        script = ["bash", "-c", 'eval "$1"', "bash", line] if shell == "bash" else ["dash", "-c", line]
        subprocess.run(
            script, cwd=scratch, env=environment, input=b"x\n", capture_output=True, timeout=10, check=False
        )
        assert sorted(p.name for p in scratch.iterdir()) == ["f0"], (shell, line)
        assert (scratch / "f0").read_text() == "a\n", (shell, line)


# --- attacks that got through once: each writes in a real shell, and is refused --------------

# (command line, its stdin, the shells it writes in)
WRITING_ATTACKS = [
    # "--" taken as the end of the options, where it is the argument of the option before it.
    ("sort -T -- -o f /etc/hostname", b"", ("bash", "dash")),
    ("file -F -- -C -m /dev/stdin", b"0 string x X\n", ("bash", "dash")),
    # After "--", "-f" is uniq's output file.
    ("uniq -- /etc/hostname -f", b"", ("bash", "dash")),
    # A lesskey source sets LESSOPEN, a command less runs for each file, even when not on a tty.
    ("less --lesskey-src=/dev/stdin /etc/hostname", b"#env\nLESSOPEN=|touch f %s\n", ("bash", "dash")),
    ("less --lesskey-s /dev/stdin /etc/hostname", b"#env\nLESSOPEN=|touch f %s\n", ("bash", "dash")),
    # dash has no $'...': it reads "$" + '\' and then a redirection (sudo runs sh -c: dash).
    ("echo $'\\' > f #'", b"", ("dash",)),
]


# (command line, the allow rules of the grant)
KEYWORD_ATTACKS = [
    # A line continuation inside a keyword is still the keyword "time", which runs what follows;
    # /usr/bin/time runs it too.
    ("ti\\\nme touch f", ["time .*"]),
    ("/usr/bin/time touch f", ["time .*"]),  # the program, not the keyword
]


@pytest.mark.parametrize(("line", "rules"), KEYWORD_ATTACKS, ids=[a for a, _ in KEYWORD_ATTACKS])
def test_it_refuses_a_keyword_or_time_even_when_an_allow_rule_names_it(
    tmp_path: Path, line: str, rules: list[str]
) -> None:
    for shell in SHELLS:
        assert _written(shell, line, b"", tmp_path / shell) == ["f"], (shell, line)
    assert "time" in refusal(line, rules), line


def _written(shell: str, line: str, stdin: bytes, scratch: Path) -> list[str]:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch), "LC_ALL": "C"}
    script = ["bash", "-c", 'eval "$1"', "bash", line] if shell == "bash" else ["dash", "-c", line]
    subprocess.run(
        script, cwd=scratch, env=environment, input=stdin, capture_output=True, timeout=10, check=False
    )
    return sorted(p.name for p in scratch.iterdir())


@pytest.mark.skipif(len(SHELLS) < 2, reason="needs bash and dash")
@pytest.mark.parametrize(("line", "stdin", "shells"), WRITING_ATTACKS, ids=[a for a, _, _ in WRITING_ATTACKS])
def test_it_refuses_attacks_that_write_in_a_real_shell(
    tmp_path: Path, line: str, stdin: bytes, shells: tuple[str, ...]
) -> None:
    # The attack is real: the line writes a file in each of these shells.
    for shell in shells:
        assert _written(shell, line, stdin, tmp_path / shell) != [], (shell, line)
    assert refusal(line).startswith("a read-only grant refuses "), line


class _Listener:
    """A TCP server on loopback that keeps what the first connection sends."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.server.settimeout(10)
        try:
            connection, _ = self.server.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(10)
            while chunk := connection.recv(100):
                self.received += chunk

    def close(self) -> bytes:
        self.thread.join(timeout=10)
        self.server.close()
        return self.received


@pytest.mark.parametrize(
    "target", ["/dev/tcp/127.0.0.1/PORT", "'/dev/tcp/127.0.0.1/PORT'", "$'/dev/tcp/127.0.0.1/PORT'"]
)
def test_it_refuses_bash_network_redirections(target: str) -> None:
    # Attack: "<" opens a socket in bash and ">&0" writes to it: bytes for any local service
    # (a Redis told to save its data to a chosen file, a local HTTP API).
    listener = _Listener()
    line = f"echo SET x 1 <{target.replace('PORT', str(listener.port))} >&0"
    subprocess.run(["bash", "-c", 'eval "$1"', "bash", line], capture_output=True, timeout=10, check=False)
    assert listener.close() == b"SET x 1\n"
    assert "bash opens a network connection" in refusal(line), line


@pytest.mark.parametrize(
    "line",
    [
        "journalctl --vacuum-time=1s",
        "journalctl --vacuum-s 1",
        "journalctl --cursor-file=f -n 1",
        "journalctl --rot",
    ],
)
def test_it_refuses_the_writing_options_of_a_command_the_grant_names(line: str) -> None:
    # The allow rule docs/security.md gives as an example lets journalctl through by name; its
    # vacuum, rotate and cursor-file options delete or write files all the same.
    assert refusal("journalctl -u ssh -n 5", ["^journalctl( .*)?"]) == ""
    assert "it deletes, rotates or writes journal files" in refusal(line, ["^journalctl( .*)?"])
