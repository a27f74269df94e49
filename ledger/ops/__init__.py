"""Operating the system: the `ledger` command line, the Procfile's process managers, logging
and the metrics counters every process pushes."""
