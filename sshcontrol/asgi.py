import os

from django.core.asgi import get_asgi_application

from sshcontrol.filemodes import restrict_umask

restrict_umask()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")
application = get_asgi_application()
