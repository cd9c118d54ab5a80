from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from sshcontrol.favicon import favicon

# The admin is sshcontrol's whole web interface: its name, not Django's, and no "View site"
# link (the site's root only leads back to the admin).
admin.site.site_header = "sshcontrol"
admin.site.site_title = "sshcontrol"
admin.site.index_title = "sshcontrol"
admin.site.site_url = None

urlpatterns = [
    path("admin/", admin.site.urls),
    path("favicon.ico", favicon),
    path("favicon.svg", favicon, name="favicon"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]

if settings.ADMIN_OIDC_ISSUER:
    # Sign-in through the identity provider (sshcontrol/admin_sso.py); the login page links to it.
    urlpatterns.insert(0, path("oidc/", include("mozilla_django_oidc.urls")))
    admin.site.login_template = "admin/sso_login.html"
