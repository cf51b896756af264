"""The ServerApp: config -> strategy -> rounds -> central evaluation -> results."""
