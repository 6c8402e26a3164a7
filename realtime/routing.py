from django.urls import path

from realtime.consumers import DashboardConsumer

websocket_urlpatterns = [
    path("ws/dashboard/updates", DashboardConsumer.as_asgi()),
]
