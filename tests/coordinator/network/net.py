"""A whole network in one process: py-evm chain, LocalStore, in-process executor, nodes as objects.

Tests drive it by ticking every node and the client, and by moving chain time
when nobody has anything to do, so windows and deadlines pass without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

import plugins.torch_executor
from coordinator.chain import ChainClient, Protocol, deploy_all
from coordinator.nodes import Node, Solver
from coordinator.storage import LocalStore
from coordinator.tasks import InProcessExecutor, TaskClient, TaskSpec
from gensyn_integrations.plugins import make_plugin_manager

E18 = 10**18
FUND = 100_000 * E18
STAKE = 1_000 * E18
BOND = 10 * E18
BUDGET = 100 * E18
MOVE = 600
WINDOW = 3600
JOB = Path(__file__).with_name("tiny_job.py")


def executor() -> InProcessExecutor:
    """The torch executor plugin on a plugin manager of its own."""
    pm = make_plugin_manager(builtins=[plugins.torch_executor], autoload=False)
    return InProcessExecutor(pm)


@dataclass
class Chain:
    """A deployed protocol on py-evm, shared by a module's tests through snapshots."""

    client: ChainClient
    p: Protocol
    accounts: list[LocalAccount]


def make_chain(n_accounts: int = 8) -> Chain:
    """Deploy, fund ``n_accounts`` accounts and stake all but the first (the client)."""
    client = ChainClient.in_process()
    gov = client.funder
    p = Protocol(client, deploy_all(client, gov))
    p.govern(gov, "game", "setTimeouts", MOVE, MOVE, MOVE, MOVE)
    p.govern(gov, "staking", "setRefereeBond", BOND)
    accts = [client.new_account() for _ in range(n_accounts)]
    for i, a in enumerate(accts):
        p.mint(gov, a.address, FUND)
        if i:
            p.stake(a, STAKE)
    return Chain(client, p, accts)


@dataclass
class Net:
    """One test's network over a shared chain."""

    chain: Chain
    root: Path
    store: LocalStore = field(init=False)
    client: TaskClient = field(init=False)
    nodes: list[Node] = field(default_factory=list)
    _next: int = 1

    def __post_init__(self) -> None:
        self.store = LocalStore(self.root / "store")
        self.exe = executor()
        self.client = TaskClient(
            self.p, self.chain.accounts[0], self.store, self.exe, workdir=self.root / "client"
        )

    @property
    def p(self) -> Protocol:
        """The protocol."""
        return self.chain.p

    def add(self, cls: type[Node] = Solver, **kw: Any) -> Any:
        """A node of ``cls`` on the next staked account."""
        acct = self.chain.accounts[self._next]
        self._next += 1
        node = cls(
            self.p, acct, self.store, self.exe, self.root / f"{cls.__name__}-{self._next}", **kw
        )
        self.nodes.append(node)
        return node

    def spec(self, **kw: Any) -> TaskSpec:
        """The tiny job's spec; keyword arguments override fields."""
        base: dict[str, Any] = {
            "entry": "tiny_job:build", "code": ("tiny_job.py",), "steps": 8, "batch_size": 8,
            "commit_interval": 2, "budget": BUDGET, "bond": BOND, "claim_window": WINDOW,
            "work_window": WINDOW, "reveal_window": WINDOW, "challenge_window": WINDOW,
        }  # fmt: skip
        base.update(kw)
        return TaskSpec(**base)

    def submit(self, **kw: Any) -> int:
        """Submit the tiny job; returns the task id."""
        return self.client.submit(self.spec(**kw), {"tiny_job.py": JOB.read_bytes()})

    def drive(self, task_id: int, *, max_rounds: int = 200, until: Any = None) -> None:
        """Tick everyone until the task is settled (or ``until()``), moving chain time when all are idle."""
        for _ in range(max_rounds):
            if until is not None and until():
                return
            busy = False
            for n in self.nodes:
                busy = n.tick() or busy
            if self.client.step(task_id) and not busy and not self._open_disputes():
                return
            if not busy:
                self.chain.client.advance_time(MOVE + 1)
        raise AssertionError(f"task {task_id} did not settle; node logs: {self.logs()}")

    def _open_disputes(self) -> list[int]:
        from coordinator.chain import Stage

        n = int(self.p.client.call(self.p.game.functions.disputeCount()))
        return [
            i for i in range(1, n + 1) if Stage(self.p.get_dispute(i)["stage"]) != Stage.RESOLVED
        ]

    def logs(self) -> str:
        """Every node's log, for failure messages."""
        return "\n".join(f"== {n.role} {n.address}\n{n.log_path.read_text() if n.log_path.exists() else ''}"
                         for n in self.nodes)  # fmt: skip

    def withdraw_everything(self) -> None:
        """Every account takes out its credits."""
        for a in self.chain.accounts:
            if self.p.credit(a.address):
                self.p.withdraw(a)
            if self.p.slash_credit(a.address):
                self.p.withdraw_slash_credit(a)

    def check_conservation(self) -> None:
        """minted = balances + escrow + stakes + credits + burned (DESIGN.md, "What must never happen")."""
        p = self.p
        s = p.supply()
        everyone = [p.client.funder, *self.chain.accounts]
        balances = sum(p.balance_of(a.address) for a in everyone)
        m, st = p.market.functions, p.staking.functions
        escrow, mcred = p.client.call(m.totalEscrow()), p.client.call(m.totalCredits())
        staked, unb = p.client.call(st.totalStaked()), p.client.call(st.totalUnbonding())
        scred = p.client.call(st.totalCredits())
        assert p.balance_of(p.market.address) == escrow + mcred
        assert p.balance_of(p.staking.address) == staked + unb + scred
        assert s["minted"] == balances + escrow + mcred + staked + unb + scred + s["burned"]
