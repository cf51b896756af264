"""The ClientApp that `flwr run` and a SuperNode load (pyproject's `clientapp`): clients/app.py's.

Named from flowerbed/ itself for the reason flowerbed/server_app.py gives: Flower looks this module up
while another thread may still be running flowerbed/__init__.py, before the package path reaches the
checkout's folders.
"""

from flowerbed.clients import app as _clients_app

app = _clients_app.app
