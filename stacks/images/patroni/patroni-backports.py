#!/usr/bin/python3
"""Two upstream fixes backported to Debian bookworm's Patroni 3.0.2, applied at image build time.
The build fails if a patched spot is not 3.0.2's code (a newer Patroni has the fix: drop it).

1. etcd3 leader key by compare-and-swap (upstream 3.0.3, commits d98d6d0b and 1c7bf2f5).
   3.0.2's Etcd3._update_leader, after re-granting an expired lease, PUT the leader key
   unconditionally when its (cached) view said the key had another lease. A leader frozen past
   ttl (docker pause, a VM stall) wakes with its lease gone and a stale view in which it still
   holds the key, and took the key back from the member promoted meanwhile: two timelines, the
   new leader's writes on the abandoned one, no sync standby. Now the write fails,
   update_lock() returns False and Patroni demotes.

2. PID 1's signal handlers set after the fork (upstream 4.1.0, commit 7f89ead5). As PID 1 (a
   container) Patroni forks its worker after installing a SIGCHLD handler that reaps any child
   (waitpid(-1)); the worker inherited it, so it could reap the worker's own short subprocess
   before psutil's wait() did: exit code None, taken as failure. Seen as Q2's "Failed to
   bootstrap cluster": post_bootstrap (/bin/true) "returned non-zero code None" (the record even
   failed to format: "QueueHandler has lost 1 log records") right after "Reaped pid=N, exit status=0".
"""

import pathlib
import py_compile
import sys

import patroni.__main__
import patroni.dcs.etcd3

ETCD3_OLD = """                try:
                    self._run_and_handle_exceptions(self._client.put, self.leader_path,
                                                    self._name, self._lease, retry=_retry)
                except ReturnFalseException:
                    pass
        return bool(self._lease)
"""
ETCD3_NEW = """                # Backport (Patroni 3.0.3): ours only if it still names us, else only if it is gone.
                fields = {'key': base64_encode(self.leader_path), 'value': base64_encode(self._name),
                          'lease': self._lease}
                put = {'request_put': fields}
                gone = {'key': fields['key'], 'target': 'CREATE', 'create_revision': '0'}
                body = {'compare': [{'key': fields['key'], 'target': 'VALUE', 'value': fields['value']}],
                        'success': [put], 'failure': [{'request_txn': {'compare': [gone], 'success': [put]}}]}
                try:
                    ret = self._run_and_handle_exceptions(self._client.call_rpc, '/kv/txn', body, retry=_retry)
                except ReturnFalseException:
                    return False
                nested = (ret.get('responses') or [{}])[0].get('response_txn', {})
                if not (ret.get('succeeded') or nested.get('succeeded')):
                    logger.warning('the leader key is held by another member: not taking it over')
                    return False
        return bool(self._lease)
"""
HANDLERS = """    if os.name != 'nt':
        signal.signal(signal.SIGCHLD, sigchld_handler)
        signal.signal(signal.SIGHUP, passtochild)
        signal.signal(signal.SIGQUIT, passtochild)
        signal.signal(signal.SIGUSR1, passtochild)
        signal.signal(signal.SIGUSR2, passtochild)
    signal.signal(signal.SIGINT, passtochild)
    signal.signal(signal.SIGABRT, passtochild)
    signal.signal(signal.SIGTERM, passtochild)
"""
FORK = """    import multiprocessing
    patroni = multiprocessing.Process(target=patroni_main)
    patroni.start()
    pid = patroni.pid
"""
MAIN_OLD = HANDLERS + "\n" + FORK
AFTER_FORK = "    # Backport (Patroni 4.1.0): handlers after the fork, so the worker does not inherit them.\n"
MAIN_NEW = FORK + AFTER_FORK + HANDLERS


def patch(module: object, old: str, new: str, what: str) -> None:
    path = pathlib.Path(module.__file__)  # type: ignore[attr-defined]
    source = path.read_text()
    if source.count(old) != 1:
        sys.exit(f"{path}: Patroni 3.0.2's code for {what} not found: drop this backport for a newer Patroni")
    path.write_text(source.replace(old, new))
    py_compile.compile(str(path), doraise=True)
    print(f"{path}: {what}")


patch(patroni.dcs.etcd3, ETCD3_OLD, ETCD3_NEW, "leader key written by compare-and-swap")
patch(patroni.__main__, MAIN_OLD, MAIN_NEW, "PID 1's signal handlers set after the fork")
