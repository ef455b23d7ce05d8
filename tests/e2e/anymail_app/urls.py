from django.urls import include, path

urlpatterns = [path("anymail/", include("mailqueue.django.urls"))]
