"""Helpers for the chain tests: a fresh py-evm chain with the protocol deployed, a
session anvil that is killed at the end, and an honest/faulty trace model that
drives disputes through all three levels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from coordinator.chain import (
    ChainClient,
    Protocol,
    Reveal,
    Stage,
    TaskParams,
    deploy_all,
)
from ree._merkle import MerkleTree

E18 = 10**18
FUND = 1_000_000 * E18
STAKE = 10_000 * E18
BOND = 100 * E18
WINDOW = 3600


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


@dataclass
class World:
    """A deployed protocol and named, funded actors."""

    client: ChainClient
    p: Protocol
    gov: LocalAccount
    alice: LocalAccount  # client
    bob: LocalAccount  # solver
    carol: LocalAccount  # solver / challenger
    dave: LocalAccount  # verifier / challenger
    referees: list[LocalAccount] = field(default_factory=list)

    @property
    def everyone(self) -> list[LocalAccount]:
        return [self.gov, self.alice, self.bob, self.carol, self.dave, *self.referees]

    def task(self, **kw: object) -> TaskParams:
        base: dict[str, object] = {
            "spec_cid": "bafkreispec", "budget": 1000 * E18, "initial_root": TraceModel().leaf(0, 4, 32),
            "commit_interval": 4, "total_steps": 32, "bond": BOND, "claim_window": WINDOW,
            "work_window": WINDOW, "reveal_window": WINDOW, "challenge_window": WINDOW,
        }  # fmt: skip
        base.update(kw)
        return TaskParams(**base)  # type: ignore[arg-type]

    def check_conservation(self) -> None:
        """minted = balances + escrow + stakes + credits + burned, and each contract holds exactly its books."""
        p = self.p
        s = p.supply()
        balances = sum(p.balance_of(a.address) for a in self.everyone)
        m, st = p.market.functions, p.staking.functions
        escrow = p.client.call(m.totalEscrow())
        mcred = p.client.call(m.totalCredits())
        staked = p.client.call(st.totalStaked())
        unb = p.client.call(st.totalUnbonding())
        scred = p.client.call(st.totalCredits())
        assert p.balance_of(p.market.address) == escrow + mcred
        assert p.balance_of(p.staking.address) == staked + unb + scred
        assert s["minted"] == balances + escrow + mcred + staked + unb + scred + s["burned"]


def make_world(client: ChainClient, referees: int = 2, stake: bool = True) -> World:
    gov = client.funder
    dep = deploy_all(client, gov)
    p = Protocol(client, dep)
    accts = [client.new_account() for _ in range(4 + referees)]
    for a in accts:
        p.mint(gov, a.address, FUND)
    w = World(client, p, gov, *accts[:4], referees=accts[4:])
    p.govern(gov, "game", "setTimeouts", 600, 600, 600, 600)
    if stake:
        for a in [w.bob, w.carol, w.dave, *w.referees]:
            p.stake(a, STAKE)
        for r in w.referees:
            p.join_referee_pool(r)
    return w


# ---------------------------------------------------------------------- traces


@dataclass(frozen=True)
class TraceModel:
    """A party's states: the true run, or one that goes wrong from step ``fault`` on."""

    fault: int | None = None
    tag: bytes = b"bad"

    def state(self, step: int) -> bytes:
        if self.fault is not None and step >= self.fault:
            return sha(self.tag + step.to_bytes(8, "big"))
        return sha(b"true" + step.to_bytes(8, "big"))

    def leaf(self, i: int, ci: int, steps: int) -> bytes:
        return self.state(min(i * ci, steps))

    def leaves(self, ci: int, steps: int) -> list[bytes]:
        n = 1 + -(-steps // ci)
        return [self.leaf(i, ci, steps) for i in range(n)]

    def tree(self, ci: int, steps: int) -> MerkleTree:
        return MerkleTree([sha(x) for x in self.leaves(ci, steps)])

    def step_leaves(self, interval: int, ci: int, steps: int) -> list[bytes]:
        start = interval * ci
        end = min((interval + 1) * ci, steps)
        return [self.state(t) for t in range(start, end + 1)]

    def step_tree(self, interval: int, ci: int, steps: int) -> MerkleTree:
        return MerkleTree([sha(x) for x in self.step_leaves(interval, ci, steps)])

    def reveal(self, ci: int, steps: int, **kw: object) -> tuple[Reveal, list[bytes]]:
        t = self.tree(ci, steps)
        ls = self.leaves(ci, steps)
        r = Reveal(
            trace_root=t.root,
            steps=steps,
            final_root=ls[-1],
            manifest_cid="bafkman",
            result_cid="bafkres",
            **kw,
        )  # type: ignore[arg-type]
        return r, list(t.proof(len(ls) - 1).siblings)


def solve(
    w: World, solver: LocalAccount, task_id: int, model: TraceModel, ci: int, steps: int
) -> int:
    """Claim, commit, wait for the reveal phase if needed and reveal; returns the slot."""
    slot = w.p.claim(solver, task_id).value
    assert slot is not None
    r, proof = model.reveal(ci, steps)
    w.p.commit(solver, task_id, slot, r)
    w.p.reveal(solver, task_id, slot, r, proof)
    return slot


def open_challenge(w: World, challenger: LocalAccount, task_id: int, slot: int, model: TraceModel,
                   ci: int, steps: int) -> int:  # fmt: skip
    t = model.tree(ci, steps)
    ls = model.leaves(ci, steps)
    did = w.p.challenge(
        challenger, task_id, slot, t.root, ls[-1], t.proof(len(ls) - 1).siblings
    ).value
    assert did is not None
    return did


def play_to_referee(w: World, did: int, d_acct: LocalAccount, c_acct: LocalAccount, d_model: TraceModel,
                    c_model: TraceModel, ci: int, steps: int) -> dict[str, object]:  # fmt: skip
    """Both parties play honestly to their models until a referee must rule; returns the dispute."""
    parties = ((d_acct, d_model), (c_acct, c_model))
    for _ in range(200):
        d = w.p.get_dispute(did)
        stage = Stage(d["stage"])
        if stage == Stage.BISECT:
            q = d["query"]
            for acct, model in parties:
                if d["level"] == 1:
                    tree, leaf = model.tree(ci, steps), model.leaf(q, ci, steps)
                else:
                    tree = model.step_tree(d["interval"], ci, steps)
                    leaf = model.step_leaves(d["interval"], ci, steps)[q]
                w.p.respond(acct, did, leaf, tree.proof(q).siblings)
        elif stage == Stage.STEP_ROOTS:
            for acct, model in parties:
                tree = model.step_tree(d["interval"], ci, steps)
                w.p.post_step_root(
                    acct, did, tree.root, tree.proof(0).siblings, tree.proof(tree.n - 1).siblings
                )
        elif stage == Stage.OP_TRACES:
            for acct, _ in parties:
                w.p.post_op_trace(acct, did, "bafkoptrace", sha(acct.address.encode()))
        else:
            return d
    raise AssertionError("dispute did not reach a referee")


def referee_of(w: World, did: int) -> LocalAccount:
    addr = w.p.get_dispute(did)["referee"]
    return next(r for r in w.referees if r.address == addr)
