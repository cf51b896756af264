"""The scripts that regenerate docs/results: paper tables, the leaderboard, fault and soak runs,
and host-cost probes. Each runs simulations through `simulations/`; nothing else imports them."""
