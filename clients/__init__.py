"""The ClientApp and the client half of every algorithm. Never imports `strategies/`."""
