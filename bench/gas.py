"""Gas per protocol action and per dispute round, measured on py-evm in one run.

Plays one task through a dispute over 2^20 optimizer steps (commit interval 2^10,
so 1024 intervals) and prints the gas of every action, the gas of each dispute
round, and the rounds taken against the bound
ceil(log2(intervals)) + ceil(log2(commit_interval)) + 2 (DESIGN.md step 5).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coordinator.chain import ChainClient, Protocol, Reveal, Stage, TaskParams, deploy_all  # noqa: E402
from ree._merkle import MerkleTree  # noqa: E402

STEPS, CI = 2**20, 2**10
FAULT = 777_777  # the solver goes wrong from this step on
E18 = 10**18


def sha(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def state(step: int, wrong: bool) -> bytes:
    bad = wrong and step >= FAULT
    return sha((b"bad" if bad else b"true") + step.to_bytes(8, "big"))


def leaves(wrong: bool) -> list[bytes]:
    return [state(min(i * CI, STEPS), wrong) for i in range(STEPS // CI + 1)]


def step_leaves(interval: int, wrong: bool) -> list[bytes]:
    return [state(t, wrong) for t in range(interval * CI, min((interval + 1) * CI, STEPS) + 1)]


def availability(p: Protocol, client: Any, solver: Any, verifier: Any, rec: Any) -> None:
    """Demand and serve a checkpoint on chain: a 4-leaf state and a 64 KiB one; then a withheld one."""
    import torch

    from coordinator.dispute import state_encodings, trace_tree
    from ree import StateTree

    for label, numel in (("4 leaves, 96 B of tensors", 8), ("4 leaves, 64 KiB of tensors", 8192)):

        def state(step: int, numel: int = numel) -> StateTree:
            return StateTree({"ree/step": step, "data/index": step,
                              "model/a": torch.full((numel,), float(step)), "model/b": torch.ones(numel)})  # fmt: skip

        roots = [state(s).root_bytes for s in (0, 2, 4)]
        tree = trace_tree(roots)
        params = TaskParams(spec_cid="bafkreispec", budget=E18, initial_root=roots[0], commit_interval=2,
                            total_steps=4, bond=100 * E18)  # fmt: skip
        tid = p.post_task(client, params).value
        assert tid is not None
        p.claim(solver, tid)
        rv = Reveal(tree.root, 4, roots[-1], "bafkman", "bafkres")
        p.commit(solver, tid, 0, rv)
        p.reveal(solver, tid, 0, rv, tree.proof(2).siblings)
        rec(f"demand checkpoint ({label})", p.demand_checkpoint(verifier, tid, 0, 1))
        if numel == 8:
            rec(f"serve checkpoint ({label})",
                p.serve_checkpoint(solver, tid, 0, state_encodings(state(2)), tree.proof(1).siblings))  # fmt: skip
            p.demand_checkpoint(verifier, tid, 0, 2)
            p.client.advance_time(3601)
            rec("data timeout (withheld: slash, refund)", p.data_timeout(verifier, tid, 0))
        else:
            rec(f"serve checkpoint ({label})",
                p.serve_checkpoint(solver, tid, 0, state_encodings(state(2)), tree.proof(1).siblings))  # fmt: skip


def main() -> None:
    c = ChainClient.in_process()
    gov = c.funder
    p = Protocol(c, deploy_all(c, gov))
    gas: dict[str, list[int]] = defaultdict(list)
    client, solver, challenger, referee = (c.new_account() for _ in range(4))
    for a in (client, solver, challenger, referee):
        p.mint(gov, a.address, 10**6 * E18)
    p.govern(gov, "game", "setTimeouts", 600, 600, 600, 600)

    def rec(name: str, r: object) -> None:
        gas[name].append(r.gas_used)  # type: ignore[attr-defined]

    for a in (solver, challenger, referee):
        rec("stake (approve + stake: stake only)", p.stake(a, 10_000 * E18))
    rec("join referee pool", p.join_referee_pool(referee))
    wrong_leaves, true_leaves = leaves(True), leaves(False)
    wtree, ttree = (MerkleTree([sha(x) for x in ls]) for ls in (wrong_leaves, true_leaves))
    params = TaskParams(spec_cid="bafkreispec", budget=1000 * E18, initial_root=true_leaves[0],
                        commit_interval=CI, total_steps=STEPS, bond=100 * E18, spot_checks=1,
                        verifier_fee=E18)  # fmt: skip
    r = p.post_task(client, params)
    rec("post task", r)
    tid = r.value
    assert tid is not None
    rec("claim", p.claim(solver, tid))
    rv = Reveal(wtree.root, STEPS, wrong_leaves[-1], "bafkman", "bafkres")
    rec("commit", p.commit(solver, tid, 0, rv))
    rec("reveal", p.reveal(solver, tid, 0, rv, wtree.proof(wtree.n - 1).siblings))
    salt = os.urandom(32)
    c.mine()  # the spot-check draw is fixed by the block after the reveal
    rec("spot commit (fixes the draw's seed)", p.spot_commit(challenger, tid, 0, False, salt))
    i = p.spot_index(tid, 0, challenger.address)
    rec(
        "spot reveal",
        p.spot_reveal(challenger, tid, 0, False, salt, wrong_leaves[i], wtree.proof(i).siblings),
    )
    r = p.challenge(
        challenger, tid, 0, ttree.root, true_leaves[-1], ttree.proof(ttree.n - 1).siblings
    )
    rec("challenge (opens the dispute)", r)
    did = r.value
    assert did is not None
    rounds: list[tuple[str, int]] = []
    while True:
        d = p.get_dispute(did)
        st = Stage(d["stage"])
        if st == Stage.BISECT:
            q = d["query"]
            total = 0
            for acct, wrong in ((solver, True), (challenger, False)):
                if d["level"] == 1:
                    ls, tree = (wrong_leaves, wtree) if wrong else (true_leaves, ttree)
                else:
                    ls = step_leaves(d["interval"], wrong)
                    tree = MerkleTree([sha(x) for x in ls])
                total += p.respond(acct, did, ls[q], tree.proof(q).siblings).gas_used
            rounds.append((f"level {d['level']} bisection", total))
        elif st == Stage.STEP_ROOTS:
            total = 0
            for acct, wrong in ((solver, True), (challenger, False)):
                tree = MerkleTree([sha(x) for x in step_leaves(d["interval"], wrong)])
                total += p.post_step_root(
                    acct, did, tree.root, tree.proof(0).siblings, tree.proof(tree.n - 1).siblings
                ).gas_used
            rounds.append(("level 2 step-root commitments", total))
        elif st == Stage.OP_TRACES:
            total = sum(
                p.post_op_trace(a, did, "bafkop", sha(a.address.encode())).gas_used
                for a in (solver, challenger)
            )
            rounds.append(("level 3 operator traces + referee draw", total))
        else:
            break
    d = p.get_dispute(did)
    rec(
        "post op inputs (the disputed op's inputs CID)",
        p.post_op_inputs(challenger, did, 41, "bafkinputs"),
    )
    rec("rule op (first verdict, names the first bad op)", p.rule_op(referee, did, False, 41))
    c.advance_time(601)
    rec("dispute timeout (verdict final, slash, settle)", p.dispute_timeout(gov, did))
    rec("withdraw (market credit)", p.withdraw(client))
    rec("withdraw slash credit", p.withdraw_slash_credit(challenger))
    availability(p, client, solver, challenger, rec)

    print(
        f"gas per action (py-evm, solc 0.8.37, optimizer 200 runs, cancun)\n{'action':<50} {'gas':>10}"
    )
    for name, vals in gas.items():
        print(f"{name:<50} {sum(vals) // len(vals):>10,}")
    print(
        f"\ndispute over 2^20 steps, commit interval 2^10 ({STEPS // CI} intervals); both parties' gas per round"
    )
    for k, (name, g) in enumerate(rounds, 1):
        print(f"  round {k:>2}  {name:<42} {g:>10,}")
    bound = math.ceil(math.log2(STEPS // CI)) + math.ceil(math.log2(CI)) + 2
    print(f"\nrounds taken: {d['rounds']}  (bound ceil(log2 1024) + ceil(log2 1024) + 2 = {bound})")
    print(f"disputed step found: {d['step']} (first wrong step {FAULT})")
    print(f"total dispute gas (rounds only): {sum(g for _, g in rounds):,}")
    if d["rounds"] > bound or d["step"] != FAULT:
        raise SystemExit("the dispute broke its round bound or found the wrong step")


if __name__ == "__main__":
    main()
