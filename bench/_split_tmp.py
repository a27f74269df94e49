import time, uuid, redis, psycopg
from ledger.config import load_settings
from ledger.db import migrate
from tests.stack import *
from bench.ingest import count_rows, DB_URL
recreate_database(DB_URL); migrate(DB_URL)
settings = load_settings({}, database_url=DB_URL, redis_url="redis://127.0.0.1:6379/12", cache_redis_url="redis://127.0.0.1:6379/13")
r=redis.Redis.from_url(settings.redis_url); r.flushdb()
q=f"b-{uuid.uuid4().hex[:6]}"
env = {**settings_env(settings), "QUEUE_NAME": q, "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS)}
sim_proc, url = start_simulator("--history-blocks", "2000", "--ops-per-block", "6", "--paused")
sim=Simulator(url); st=sim.status(); expected=len(sim.truth()["operations"])
env={**env,"TRON_NODE_URL":url,"START_BLOCK":str(st["head"]-1999)}
t=time.monotonic(); l=start_listener(env)
wait_until(lambda: r.hlen(f"dramatiq:{q}.msgs")>=expected, 600, "enqueued")
print("listener enqueue", expected/(time.monotonic()-t), "ops/s"); l.stop()
t=time.monotonic(); w=start_worker(env, processes=2, threads=8)
wait_until(lambda: count_rows(DB_URL)>=expected, 600, "persisted")
print("worker drain", expected/(time.monotonic()-t), "ops/s"); w.stop(); sim_proc.stop()
