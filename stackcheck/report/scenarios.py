"""Which chaos test runs which scenario, for `stackcheck drill` (no matplotlib here: the CLI parser imports it)."""

# scenario -> the test that runs it (each creates experiment("<scenario>", stack)); a unit test
# checks this table against chaos/test_*.py so the two cannot drift apart.
SCENARIO_TESTS = {
    "backend-kill": "chaos/test_backend_kill.py",
    "primary-kill": "chaos/test_primary_failover.py",
    "redis-kill": "chaos/test_redis_kill.py",
    "db-latency": "chaos/test_db_latency.py",
    "db-reset-peer": "chaos/test_db_reset_peer.py",
    "replica-partition": "chaos/test_replica_partition.py",
}
