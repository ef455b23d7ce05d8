"""The operator's dashboard: a WSGI app reading Redis through the stores, behind basic auth."""

from __future__ import annotations

from mailqueue.dashboard.app import DashboardApp
from mailqueue.dashboard.mount import create_app, mounted, serve

__all__ = ["DashboardApp", "create_app", "mounted", "serve"]
