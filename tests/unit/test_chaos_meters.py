"""RTO computation and ledger reconciliation on synthetic probe series and write sets."""

from __future__ import annotations

from stackcheck.chaos.meters import ProbeSample, WriteLedger, compute_rto


def series(pattern: str, period: float = 0.05) -> list[ProbeSample]:
    """'.' a success, 'x' a failure, one per period."""
    return [ProbeSample(i * period, c == ".", 0.001) for i, c in enumerate(pattern)]


def test_rto_runs_from_first_failure_to_first_of_k_successes() -> None:
    result = compute_rto(series("....xxxxx...."), 0.05, k=3)
    assert result.first_failure == 0.2
    assert result.recovered_at == 0.45
    assert abs(result.rto_s - 0.25) < 1e-9  # type: ignore[operator]
    assert result.failed_probes == 5


def test_a_flap_shorter_than_k_is_not_recovery() -> None:
    result = compute_rto(series("..xx..x...."), 0.05, k=3)
    assert result.recovered_at == 7 * 0.05
    assert result.failed_probes == 3


def test_no_outage_and_no_recovery_are_told_apart() -> None:
    assert compute_rto(series("......"), 0.05, 3).rto_s is None
    assert compute_rto(series("......"), 0.05, 3).recovered
    never = compute_rto(series("..xxxxx"), 0.05, 3)
    assert never.rto_s is None
    assert not never.recovered
    assert "NOT recovered" in never.describe()


def test_out_of_order_samples_are_sorted_by_schedule() -> None:
    samples = series("...xx...")
    assert compute_rto(reversed(samples), 0.05, 2).rto_s == compute_rto(samples, 0.05, 2).rto_s


def ledger_with(acks: dict[int, float], attempted: int) -> WriteLedger:
    ledger = WriteLedger(lambda n: None)
    ledger.acks, ledger.attempted = dict(acks), attempted
    return ledger


def test_ledger_reports_lost_unexpected_and_duplicates() -> None:
    ledger = ledger_with({1: 1.0, 2: 2.0, 3: 3.0, 4: 4.5}, attempted=5)
    report = ledger.reconcile([1, 2, 5, 5])
    assert report.lost == (3, 4)
    assert report.unexpected == (5,)
    assert report.duplicates == (5,)
    assert report.rpo_s == 4.5 - 2.0  # last surviving before the loss -> last lost
    assert "lost 2 acknowledged writes (3-4)" in report.describe()


def test_ledger_without_loss_has_zero_rpo() -> None:
    report = ledger_with({1: 1.0, 2: 2.0}, 2).reconcile([2, 1])
    assert (report.lost, report.rpo_s) == ((), 0.0)
