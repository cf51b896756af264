"""Running on devices: certificates and node keys, per-node data files, the commands of a
deployment, and the control of Flower's own processes (shared with the `flower` engine)."""
