"""Model-based stateful test: random sequences of protocol actions by several actors,
checked after every step against a Python model of every balance, and, at the end,
after all deadlines and withdrawals, the contracts hold nothing.

The model decides whether an action is legal; an illegal one must revert and change nothing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from coordinator.chain import ChainClient, ChainError, Outcome
from tests.coordinator.chain.chain_helpers import (
    FUND,
    TraceModel,
    World,
    make_world,
    open_challenge,
    play_to_referee,
    referee_of,
)

W = 100_000  # every window; time moves in jumps of 2W so no action lands near a deadline
BUDGET, BOND, CI, STEPS = 10_000, 1_000, 2, 8
HONEST, WRONG = TraceModel(), TraceModel(fault=5)


@dataclass
class TaskM:
    posted: int
    solver: str | None = None
    state: str = "open"  # open claimed revealed paid slashed expired
    wrong: bool = False
    revealed_at: int = 0


class ProtocolMachine(RuleBasedStateMachine):
    """Four actors (a client and three staked solvers/challengers) plus two referees."""

    def __init__(self) -> None:
        super().__init__()
        self.w: World = make_world(ChainClient.in_process(), referees=2, stake=False)
        self.p = self.w.p
        self.p.govern(self.w.gov, "staking", "setUnbondingDelay", 2 * W + 10_000)
        self.p.govern(self.w.gov, "staking", "setRefereeBond", BOND)
        self.actors = [self.w.alice, self.w.bob, self.w.carol, self.w.dave]
        self.bal = {a.address: FUND for a in self.w.everyone}
        self.bal[self.w.gov.address] = self.p.balance_of(self.w.gov.address)
        self.staked: dict[str, int] = defaultdict(int)
        self.locked: dict[str, int] = defaultdict(int)
        self.unbonding: dict[str, int] = defaultdict(int)
        self.unbond_at: dict[str, int] = defaultdict(int)
        self.mcredit: dict[str, int] = defaultdict(int)
        self.scredit: dict[str, int] = defaultdict(int)
        self.escrow = 0
        self.burned = 0
        self.tasks: dict[int, TaskM] = {}
        for r in self.w.referees:
            self.p.stake(r, 10 * BOND)
            self.staked[r.address] += 10 * BOND
            self.bal[r.address] -= 10 * BOND
            self.p.join_referee_pool(r)

    # ------------------------------------------------------------ helpers

    def _expect(self, ok: bool, fn: object, *args: object) -> bool:
        if ok:
            fn(*args)  # type: ignore[operator]
            return True
        try:
            fn(*args)  # type: ignore[operator]
        except ChainError:
            return False
        raise AssertionError(f"{fn} {args} should have reverted by the model")

    def _now(self) -> int:
        return self.w.client.now()

    def _free(self, a: str) -> int:
        return self.staked[a] - self.locked[a]

    def _slash(self, who: str, to: str | None) -> None:
        self.staked[who] -= BOND
        self.locked[who] -= BOND
        reward = BOND // 2 if to else 0
        if to:
            self.scredit[to] += reward
        self.burned += BOND - reward

    # ------------------------------------------------------------ rules

    @rule(i=st.integers(1, 3), amount=st.sampled_from([1, BOND, 3 * BOND]))
    def stake(self, i: int, amount: int) -> None:
        a = self.actors[i]
        self.p.stake(a, amount)
        self.bal[a.address] -= amount
        self.staked[a.address] += amount

    @rule(i=st.integers(1, 3), amount=st.sampled_from([1, BOND]))
    def request_unstake(self, i: int, amount: int) -> None:
        a = self.actors[i].address
        if self._expect(self._free(a) >= amount, self.p.request_unstake, self.actors[i], amount):
            self.staked[a] -= amount
            self.unbonding[a] += amount
            self.unbond_at[a] = self._now() + 2 * W + 10_000

    @rule(i=st.integers(1, 3))
    def withdraw_unstaked(self, i: int) -> None:
        a = self.actors[i].address
        ok = self.unbonding[a] > 0 and self._now() + 1 >= self.unbond_at[a]
        if self._expect(ok, self.p.withdraw_unstaked, self.actors[i]):
            self.bal[a] += self.unbonding[a]
            self.unbonding[a] = 0

    @rule()
    def post(self) -> None:
        tid = self.p.post_task(self.w.alice, self.w.task(
            budget=BUDGET, bond=BOND, commit_interval=CI, total_steps=STEPS, initial_root=HONEST.leaf(0, CI, STEPS),
            claim_window=W, work_window=W, reveal_window=W, challenge_window=W,
        )).value  # fmt: skip
        assert tid is not None
        self.tasks[tid] = TaskM(posted=self._now())
        self.bal[self.w.alice.address] -= BUDGET
        self.escrow += BUDGET

    def _pick(self, k: int, state: str) -> int | None:
        ids = [t for t, m in self.tasks.items() if m.state == state]
        return ids[k % len(ids)] if ids else None

    @rule(k=st.integers(0, 10), i=st.integers(1, 3))
    def claim(self, k: int, i: int) -> None:
        tid = self._pick(k, "open")
        if tid is None:
            return
        a, m = self.actors[i], self.tasks[tid]
        ok = self._now() + 1 <= m.posted + W and self._free(a.address) >= BOND
        if self._expect(ok, self.p.claim, a, tid):
            m.solver, m.state = a.address, "claimed"
            self.locked[a.address] += BOND

    @rule(k=st.integers(0, 10), wrong=st.booleans())
    def commit_and_reveal(self, k: int, wrong: bool) -> None:
        tid = self._pick(k, "claimed")
        if tid is None:
            return
        m = self.tasks[tid]
        if self._now() + 2 > m.posted + 2 * W:
            return  # past the commit deadline: the timeout rule handles it
        solver = next(a for a in self.actors if a.address == m.solver)
        r, proof = (WRONG if wrong else HONEST).reveal(CI, STEPS)
        self.p.commit(solver, tid, 0, r)
        self.p.reveal(solver, tid, 0, r, proof)
        m.state, m.wrong, m.revealed_at = "revealed", wrong, self._now()

    @rule(k=st.integers(0, 10), i=st.integers(1, 3))
    def challenge_and_resolve(self, k: int, i: int) -> None:
        """Challenge, play all three levels, a truthful referee rules, the verdict becomes final."""
        tid = self._pick(k, "revealed")
        if tid is None:
            return
        m, c = self.tasks[tid], self.actors[i]
        if (
            c.address == m.solver
            or self._free(c.address) < BOND
            or self._now() + 1 > m.revealed_at + W
        ):
            return
        solver = next(a for a in self.actors if a.address == m.solver)
        s_model, c_model = (WRONG, HONEST) if m.wrong else (HONEST, WRONG)
        did = open_challenge(self.w, c, tid, 0, c_model, CI, STEPS)
        self.locked[c.address] += BOND
        play_to_referee(self.w, did, solver, c, s_model, c_model, CI, STEPS)
        self.p.rule(referee_of(self.w, did), did, not m.wrong)
        self.w.client.advance_time(601)
        self.p.dispute_timeout(self.w.gov, did)
        assert Outcome(self.p.get_dispute(did)["outcome"]) == (
            Outcome.CHALLENGER_WON if m.wrong else Outcome.DEFENDER_WON
        )
        if m.wrong:
            self._slash(m.solver, c.address)  # type: ignore[arg-type]
            self.locked[c.address] -= BOND
            m.state = "slashed"
            self.escrow -= BUDGET
            self.mcredit[self.w.alice.address] += BUDGET
        else:
            self._slash(c.address, m.solver)

    @rule(k=st.integers(0, 10))
    def finalize(self, k: int) -> None:
        tid = self._pick(k, "revealed")
        if tid is None:
            return
        m = self.tasks[tid]
        if self._expect(self._now() + 1 > m.revealed_at + W, self.p.finalize, self.w.gov, tid, 0):
            fee = BUDGET * 50 // 10_000
            self.escrow -= BUDGET
            self.mcredit[m.solver] += BUDGET - fee  # type: ignore[index]
            self.burned += fee
            self.locked[m.solver] -= BOND  # type: ignore[index]
            m.state = "paid"

    @rule(k=st.integers(0, 10), which=st.sampled_from(["open", "claimed"]))
    def timeout(self, k: int, which: str) -> None:
        tid = self._pick(k, which)
        if tid is None:
            return
        m = self.tasks[tid]
        deadline = m.posted + (W if which == "open" else 2 * W)
        if self._expect(self._now() + 1 > deadline, self.p.timeout_slot, self.w.gov, tid, 0):
            if which == "claimed":
                self._slash(m.solver, self.w.alice.address)  # type: ignore[arg-type]
            m.state = "expired" if which == "open" else "slashed"
            self.escrow -= BUDGET
            self.mcredit[self.w.alice.address] += BUDGET

    @rule(i=st.integers(0, 3))
    def withdraw(self, i: int) -> None:
        a = self.actors[i]
        if self._expect(self.mcredit[a.address] > 0, self.p.withdraw, a):
            self.bal[a.address] += self.mcredit.pop(a.address)

    @rule(i=st.integers(0, 3))
    def withdraw_slash_credit(self, i: int) -> None:
        a = self.actors[i]
        if self._expect(self.scredit[a.address] > 0, self.p.withdraw_slash_credit, a):
            self.bal[a.address] += self.scredit.pop(a.address)

    @precondition(lambda self: bool(self.tasks))
    @rule()
    def advance(self) -> None:
        self.w.client.advance_time(2 * W)

    # ------------------------------------------------------------ checks

    @invariant()
    def every_balance_matches_the_model(self) -> None:
        p = self.p
        for a in self.w.everyone:
            assert p.balance_of(a.address) == self.bal[a.address], a.address
            acct = p.stake_of(a.address)
            assert (acct["staked"], acct["locked"], acct["unbonding"]) == (
                self.staked[a.address], self.locked[a.address], self.unbonding[a.address],
            )  # fmt: skip
            assert p.credit(a.address) == self.mcredit[a.address]
            assert p.slash_credit(a.address) == self.scredit[a.address]
        assert p.client.call(p.market.functions.totalEscrow()) == self.escrow
        assert p.supply()["burned"] == self.burned
        self.w.check_conservation()

    def teardown(self) -> None:
        """Run out every deadline, settle and withdraw everything: the contracts must hold 0."""
        try:
            self._drain()
        finally:
            super().teardown()

    def _drain(self) -> None:
        p, w = self.p, self.w
        for _ in range(3):
            w.client.advance_time(2 * W + 10_001)
            for tid, m in self.tasks.items():
                if m.state in ("open", "claimed"):
                    p.timeout_slot(w.gov, tid, 0)
                    m.state = "done"
                elif m.state == "revealed":
                    p.finalize(w.gov, tid, 0)
                    m.state = "done"
        for a in w.everyone:
            for r in w.referees:
                if r.address == a.address:
                    p.leave_referee_pool(r)
            free = p.stake_of(a.address)["staked"] - p.stake_of(a.address)["locked"]
            if free:
                p.request_unstake(a, free)
        w.client.advance_time(2 * W + 10_001)
        for a in w.everyone:
            if p.stake_of(a.address)["unbonding"]:
                p.withdraw_unstaked(a)
            if p.credit(a.address):
                p.withdraw(a)
            if p.slash_credit(a.address):
                p.withdraw_slash_credit(a)
        assert p.balance_of(p.market.address) == 0
        assert p.balance_of(p.staking.address) == 0
        w.check_conservation()


ProtocolMachine.TestCase.settings = settings(
    max_examples=4, stateful_step_count=18, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)  # fmt: skip
TestProtocolModel = ProtocolMachine.TestCase
