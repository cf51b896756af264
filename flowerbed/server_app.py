"""The ServerApp that `flwr run` loads (pyproject's `serverapp`): simulations/serverapp.py's, which
checks the run config as `flowerbed run` does and then serves server/app.py's loop.

It is named from flowerbed/ itself, not from simulations/, because of how Flower loads an app: it
starts the ServerApp's import in one thread and checks the ClientApp's module (`find_spec`) in
another at once. While the first thread still runs flowerbed/__init__.py (a fresh app bundle compiles
it first), the package path holds only flowerbed/, not yet the checkout's folders, and the check
failed with "No module named 'flowerbed.clients'". A module in flowerbed/ is found at any moment.
"""

from flowerbed.simulations import serverapp as _serverapp

app = _serverapp.app
