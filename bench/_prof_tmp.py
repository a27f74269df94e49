import cProfile, pstats, time, uuid, redis, threading
from ledger.config import load_settings
from ledger.db import migrate
from ledger.queue import create_broker
from ledger.tron_node import TronNode
from listener.adapter import NodeAdapter
from listener.sink import BrokerSink
from listener.store import PgStore
from listener.streamer import Streamer
from ledger.accounts import add_accounts
import psycopg
from tests.stack import *
from bench.ingest import DB_URL
recreate_database(DB_URL); migrate(DB_URL)
with psycopg.connect(DB_URL) as c: add_accounts(c, list(SIM_ACCOUNTS))
sim_proc, url = start_simulator("--history-blocks", "2000", "--ops-per-block", "6", "--paused")
sim=Simulator(url); st=sim.status()
broker=create_broker("redis://127.0.0.1:6379/12")
stop=threading.Event()
s=Streamer(NodeAdapter(TronNode(url)), PgStore(DB_URL), BrokerSink(broker,"prof"), start_block=st["head"]-1999, stop=stop)
t=time.monotonic()
pr=cProfile.Profile(); pr.enable()
while not s.sync_cycle(): pass
pr.disable()
print("elapsed", time.monotonic()-t, s.progress.operations)
pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
sim_proc.stop()
