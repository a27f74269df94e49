"""The ledger's HTTP API: a Flask app (`web.app:create_app`) served by granian."""
