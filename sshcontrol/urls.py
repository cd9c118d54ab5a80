from django.contrib import admin
from django.urls import path
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
