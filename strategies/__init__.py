"""The server half of every algorithm: `flwr.serverapp.strategy.Strategy` subclasses.

Never imports `clients/`: in a deployment the two halves live on different machines.
"""
