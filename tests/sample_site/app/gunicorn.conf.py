"""gunicorn settings of the sample site: bind the slot's port on 127.0.0.1 only."""

import os

bind = f"127.0.0.1:{os.environ.get('PORT', '8000')}"
workers = 2
wsgi_app = "app:application"
# Finish in-flight requests when systemd stops the slot.
graceful_timeout = 10
