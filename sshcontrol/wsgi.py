import os

from django.core.wsgi import get_wsgi_application

from sshcontrol.filemodes import restrict_umask

restrict_umask()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sshcontrol.settings")
application = get_wsgi_application()
