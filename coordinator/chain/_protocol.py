"""One method per protocol action, over the four deployed contracts.

Each write takes the acting account first and returns a :class:`TxResult` whose
``value`` holds the action's result (a task id, a slot, a dispute id) where it has
one. A revert raises :class:`ChainError` with the decoded custom error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3.contract import Contract

from coordinator.chain._artifacts import load_artifact
from coordinator.chain._client import ChainClient, TxResult
from coordinator.chain._types import Deployment, Reveal, TaskParams, spot_commitment


def _named(abi_outputs: list[dict[str, Any]], value: Any) -> dict[str, Any]:
    """A struct returned by a view, as a dict keyed by the ABI's field names."""
    return {o["name"]: v for o, v in zip(abi_outputs, value, strict=True)}


class Protocol:
    """The token, staking, task market and dispute game of one deployment."""

    def __init__(self, client: ChainClient, deployment: Deployment) -> None:
        self.client = client
        self.deployment = deployment
        self.token: Contract = client.contract(load_artifact("AIToken"), deployment.token)
        self.staking: Contract = client.contract(load_artifact("Staking"), deployment.staking)
        self.market: Contract = client.contract(load_artifact("TaskMarket"), deployment.market)
        self.game: Contract = client.contract(load_artifact("DisputeGame"), deployment.game)

    def _tx(
        self, who: LocalAccount, fn: Any, action: str, value_event: tuple[str, str] | None = None
    ) -> TxResult:
        r = self.client.transact(who, fn, action)
        if value_event is None:
            return r
        name, arg = value_event
        return TxResult(r.tx_hash, r.block_number, r.gas_used, r.events, int(r.event(name)[arg]))

    # ------------------------------------------------------------ token

    def mint(self, governance: LocalAccount, to: str, amount: int) -> TxResult:
        """Governance mints AI to ``to`` (the devnet funds its accounts this way)."""
        return self._tx(
            governance, self.token.functions.mint(to_checksum_address(to), amount), "mint"
        )

    def approve(self, owner: LocalAccount, spender: str, amount: int) -> TxResult:
        """Let ``spender`` move ``amount`` of ``owner``'s AI."""
        fn = self.token.functions.approve(to_checksum_address(spender), amount)
        return self._tx(owner, fn, "approve")

    def transfer(self, owner: LocalAccount, to: str, amount: int) -> TxResult:
        """Send AI."""
        return self._tx(
            owner, self.token.functions.transfer(to_checksum_address(to), amount), "transfer"
        )

    def balance_of(self, address: str) -> int:
        """AI held by ``address``."""
        return int(self.client.call(self.token.functions.balanceOf(to_checksum_address(address))))

    def supply(self) -> dict[str, int]:
        """totalMinted, totalBurned and totalSupply of AI."""
        t = self.token.functions
        return {
            "minted": int(self.client.call(t.totalMinted())),
            "burned": int(self.client.call(t.totalBurned())),
            "supply": int(self.client.call(t.totalSupply())),
        }

    # ------------------------------------------------------------ staking

    def stake(self, who: LocalAccount, amount: int) -> TxResult:
        """Approve and stake ``amount``."""
        self.approve(who, self.staking.address, amount)
        return self._tx(who, self.staking.functions.stake(amount), "stake")

    def request_unstake(self, who: LocalAccount, amount: int) -> TxResult:
        """Start unbonding free stake; withdrawable after the unbonding delay."""
        return self._tx(who, self.staking.functions.requestUnstake(amount), "request unstake")

    def withdraw_unstaked(self, who: LocalAccount) -> TxResult:
        """Take out stake whose unbonding delay has passed."""
        return self._tx(who, self.staking.functions.withdrawUnstaked(), "withdraw unstaked")

    def withdraw_slash_credit(self, who: LocalAccount) -> TxResult:
        """Take out slash rewards credited in Staking."""
        return self._tx(who, self.staking.functions.withdrawCredit(), "withdraw slash credit")

    def join_referee_pool(self, who: LocalAccount) -> TxResult:
        """Opt in to be drawn as a referee."""
        return self._tx(who, self.staking.functions.joinRefereePool(), "join referee pool")

    def leave_referee_pool(self, who: LocalAccount) -> TxResult:
        """Opt out of the referee pool."""
        return self._tx(who, self.staking.functions.leaveRefereePool(), "leave referee pool")

    def stake_of(self, address: str) -> dict[str, int]:
        """staked (incl. locked), locked, unbonding and unbondAt of an account."""
        v = self.client.call(self.staking.functions.accountOf(to_checksum_address(address)))
        return dict(
            zip(("staked", "locked", "unbonding", "unbond_at"), (int(x) for x in v), strict=True)
        )

    def slash_credit(self, address: str) -> int:
        """Slash rewards withdrawable from Staking."""
        return int(self.client.call(self.staking.functions.credits(to_checksum_address(address))))

    # ------------------------------------------------------------ market

    def post_task(self, client: LocalAccount, params: TaskParams) -> TxResult:
        """Approve the escrow and post a task; ``value`` is the task id."""
        self.approve(client, self.market.address, params.escrow)
        fn = self.market.functions.postTask(params.as_tuple())
        return self._tx(client, fn, "post task", ("TaskPosted", "taskId"))

    def claim(self, solver: LocalAccount, task_id: int) -> TxResult:
        """Claim the next free slot, locking the bond; ``value`` is the slot."""
        return self._tx(solver, self.market.functions.claim(task_id), "claim", ("Claimed", "slot"))

    def commit(self, solver: LocalAccount, task_id: int, slot: int, reveal: Reveal) -> TxResult:
        """Commit to ``reveal`` (only its hash goes on chain)."""
        c = reveal.commitment(task_id, slot, solver.address)
        return self._tx(solver, self.market.functions.commit(task_id, slot, c), "commit")

    def reveal(
        self,
        solver: LocalAccount,
        task_id: int,
        slot: int,
        reveal: Reveal,
        final_proof: Sequence[bytes],
    ) -> TxResult:
        """Reveal a committed result; ``final_proof`` proves the final root is the trace's last leaf."""
        fn = self.market.functions.reveal(task_id, slot, reveal.as_tuple(), list(final_proof))
        return self._tx(solver, fn, "reveal")

    def spot_commit(
        self, verifier: LocalAccount, task_id: int, slot: int, agrees: bool, salt: bytes
    ) -> TxResult:
        """Commit to a spot check's verdict."""
        c = spot_commitment(task_id, slot, verifier.address, agrees, salt)
        return self._tx(verifier, self.market.functions.spotCommit(task_id, slot, c), "spot commit")

    def spot_index(self, task_id: int, slot: int, verifier: str) -> int:
        """The interval ``verifier`` must check, drawn from the seed of :meth:`draw_seed`."""
        fn = self.market.functions.spotIndex(task_id, slot, to_checksum_address(verifier))
        return int(self.client.call(fn))

    def draw_seed(self, task_id: int, slot: int) -> bytes:
        """The spot-check seed (reverts ``SeedNotReady`` until the block after the reveal exists)."""
        return bytes(self.client.call(self.market.functions.drawSeed(task_id, slot)))

    def fix_seed(self, anyone: LocalAccount, task_id: int, slot: int) -> TxResult:
        """Store the spot-check seed once the block after the reveal exists."""
        return self._tx(anyone, self.market.functions.fixSeed(task_id, slot), "fix seed")

    def spot_reveal(
        self, verifier: LocalAccount, task_id: int, slot: int, agrees: bool, salt: bytes,
        leaf: bytes, proof: Sequence[bytes],
    ) -> TxResult:  # fmt: skip
        """Reveal a spot check with the drawn interval root and its proof; earns the fee."""
        fn = self.market.functions.spotReveal(task_id, slot, agrees, salt, leaf, list(proof))
        return self._tx(verifier, fn, "spot reveal")

    # ------------------------------------------------------------ availability

    def demand_checkpoint(self, verifier: LocalAccount, task_id: int, slot: int,
                          index: int) -> TxResult:  # fmt: skip
        """Demand the checkpoint behind trace leaf ``index`` of a revealed slot (locks a bond)."""
        fn = self.market.functions.demandCheckpoint(task_id, slot, index)
        return self._tx(verifier, fn, "demand checkpoint")

    def serve_checkpoint(self, solver: LocalAccount, task_id: int, slot: int,
                         leaves: Sequence[bytes], proof: Sequence[bytes]) -> TxResult:  # fmt: skip
        """Serve the demanded checkpoint: its state leaves' encodings and the trace proof."""
        fn = self.market.functions.serveCheckpoint(task_id, slot, list(leaves), list(proof))
        return self._tx(solver, fn, "serve checkpoint")

    def data_timeout(self, anyone: LocalAccount, task_id: int, slot: int) -> TxResult:
        """Slash a solver that did not serve a demanded checkpoint in time."""
        return self._tx(anyone, self.market.functions.dataTimeout(task_id, slot), "data timeout")

    def get_demand(self, task_id: int, slot: int) -> dict[str, Any]:
        """The slot's latest checkpoint demand, keyed by TaskMarket.Demand's field names."""
        fn = self.market.functions.getDemand(task_id, slot)
        return _named(fn.abi["outputs"][0]["components"], self.client.call(fn, "get demand"))

    def served_leaves(self, tx_hash: str) -> list[bytes]:
        """The state leaves a serveCheckpoint transaction carried (read from its calldata)."""
        tx = self.client.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        _, args = self.market.decode_function_input(tx["input"])
        return [bytes(x) for x in args["leaves"]]

    def challenge(
        self, challenger: LocalAccount, task_id: int, slot: int, trace_root: bytes,
        final_leaf: bytes, final_proof: Sequence[bytes],
    ) -> TxResult:  # fmt: skip
        """Challenge a revealed slot with a bond; ``value`` is the dispute id."""
        fn = self.market.functions.challenge(
            task_id, slot, trace_root, final_leaf, list(final_proof)
        )
        return self._tx(challenger, fn, "challenge", ("Challenged", "disputeId"))

    def finalize(self, anyone: LocalAccount, task_id: int, slot: int) -> TxResult:
        """Pay a slot whose challenge window has passed."""
        return self._tx(anyone, self.market.functions.finalize(task_id, slot), "finalize")

    def timeout_slot(self, anyone: LocalAccount, task_id: int, slot: int) -> TxResult:
        """End a slot whose claim, commit or reveal deadline passed."""
        return self._tx(anyone, self.market.functions.timeoutSlot(task_id, slot), "timeout slot")

    def reopen_slot(self, client: LocalAccount, task_id: int, slot: int) -> TxResult:
        """The client reopens a slot whose solver missed the commit deadline (its bond is slashed)."""
        fn = self.market.functions.reopenSlot(task_id, slot)
        return self._tx(client, fn, "reopen slot")

    def cancel_task(self, client: LocalAccount, task_id: int) -> TxResult:
        """The client cancels a task nobody has claimed; the escrow becomes its credit."""
        return self._tx(client, self.market.functions.cancelTask(task_id), "cancel task")

    def report_progress(self, solver: LocalAccount, task_id: int, slot: int, cid: str) -> TxResult:
        """Name the slot's latest progress manifest, for a solver that resumes it after a reopen."""
        fn = self.market.functions.reportProgress(task_id, slot, cid)
        return self._tx(solver, fn, "report progress")

    def progress_cid(self, task_id: int, slot: int) -> str:
        """The slot's latest progress manifest CID ('' if none)."""
        return str(self.client.call(self.market.functions.progressCid(task_id, slot)))

    def task_count(self) -> int:
        """Tasks posted so far (ids run from 1)."""
        return int(self.client.call(self.market.functions.taskCount()))

    def withdraw(self, who: LocalAccount) -> TxResult:
        """Take out market credits: pay, refunds, spot-check fees."""
        return self._tx(who, self.market.functions.withdraw(), "withdraw")

    def credit(self, address: str) -> int:
        """Market credits withdrawable by ``address``."""
        return int(self.client.call(self.market.functions.credits(to_checksum_address(address))))

    def get_slot(self, task_id: int, slot: int) -> dict[str, Any]:
        """The slot record, keyed by TaskMarket.Slot's field names."""
        fn = self.market.functions.getSlot(task_id, slot)
        outputs = fn.abi["outputs"][0]["components"]
        return _named(outputs, self.client.call(fn, "get slot"))

    def get_task(self, task_id: int) -> dict[str, Any]:
        """The task: ``p`` (parameters) and its counters."""
        fn = self.market.functions.getTask(task_id)
        raw = self.client.call(fn, "get task")
        out = _named(fn.abi["outputs"], raw)
        out["p"] = _named(fn.abi["outputs"][0]["components"], out["p"])
        return out

    # ------------------------------------------------------------ dispute game

    def respond(
        self, party: LocalAccount, dispute_id: int, leaf: bytes, proof: Sequence[bytes]
    ) -> TxResult:
        """Answer the current bisection query."""
        return self._tx(
            party, self.game.functions.respond(dispute_id, leaf, list(proof)), "respond"
        )

    def post_step_root(
        self, party: LocalAccount, dispute_id: int, root: bytes,
        start_proof: Sequence[bytes], end_proof: Sequence[bytes],
    ) -> TxResult:  # fmt: skip
        """Commit the step roots inside the disputed interval."""
        fn = self.game.functions.postStepRoot(dispute_id, root, list(start_proof), list(end_proof))
        return self._tx(party, fn, "post step root")

    def post_op_trace(
        self, party: LocalAccount, dispute_id: int, cid: str, root: bytes
    ) -> TxResult:
        """Post the operator trace of the disputed step."""
        return self._tx(
            party, self.game.functions.postOpTrace(dispute_id, cid, root), "post op trace"
        )

    def rule(self, referee: LocalAccount, dispute_id: int, defender_wins: bool) -> TxResult:
        """The drawn referee's verdict, by transaction."""
        return self._tx(referee, self.game.functions.rule(dispute_id, defender_wins), "rule")

    def rule_op(self, referee: LocalAccount, dispute_id: int, defender_wins: bool,
                op: int) -> TxResult:  # fmt: skip
        """The drawn referee's verdict, naming the first bad operator of the disputed step."""
        fn = self.game.functions.ruleOp(dispute_id, defender_wins, op)
        return self._tx(referee, fn, "rule op")

    def post_op_inputs(self, party: LocalAccount, dispute_id: int, op: int, cid: str) -> TxResult:
        """Name the CID of the inputs of op ``op`` for the referee (no round, no deadline)."""
        fn = self.game.functions.postOpInputs(dispute_id, op, cid)
        return self._tx(party, fn, "post op inputs")

    def sign_verdict(
        self, referee: LocalAccount, dispute_id: int, defender_wins: bool, deadline: int,
        *, chain_id: int | None = None, contract: str | None = None,
    ) -> bytes:  # fmt: skip
        """An EIP-712 verdict signature bound to chain id, contract, dispute id and deadline."""
        typed = {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "Verdict": [
                    {"name": "disputeId", "type": "uint256"},
                    {"name": "defenderWins", "type": "bool"},
                    {"name": "deadline", "type": "uint256"},
                ],
            },
            "primaryType": "Verdict",
            "domain": {
                "name": "GensynDisputeGame",
                "version": "1",
                "chainId": self.client.chain_id if chain_id is None else chain_id,
                "verifyingContract": contract or self.game.address,
            },
            "message": {
                "disputeId": dispute_id,
                "defenderWins": defender_wins,
                "deadline": deadline,
            },
        }
        signed = Account.sign_typed_data(referee.key, full_message=typed)
        return bytes(signed.signature)

    def rule_by_sig(
        self,
        sender: LocalAccount,
        dispute_id: int,
        defender_wins: bool,
        deadline: int,
        signature: bytes,
    ) -> TxResult:
        """Submit a referee's signed verdict (anyone may)."""
        fn = self.game.functions.ruleBySig(dispute_id, defender_wins, deadline, signature)
        return self._tx(sender, fn, "rule by signature")

    def appeal(self, loser: LocalAccount, dispute_id: int) -> TxResult:
        """The first verdict's loser appeals once."""
        return self._tx(loser, self.game.functions.appeal(dispute_id), "appeal")

    def dispute_timeout(self, anyone: LocalAccount, dispute_id: int) -> TxResult:
        """Advance a dispute whose deadline passed."""
        return self._tx(anyone, self.game.functions.timeout(dispute_id), "dispute timeout")

    def get_dispute(self, dispute_id: int) -> dict[str, Any]:
        """The dispute record, keyed by DisputeGame.Dispute's field names."""
        fn = self.game.functions.getDispute(dispute_id)
        return _named(fn.abi["outputs"][0]["components"], self.client.call(fn, "get dispute"))

    def verify_proof(
        self, root: bytes, n: int, index: int, leaf: bytes, siblings: Sequence[bytes]
    ) -> bool:
        """The on-chain Merkle verifier (DESIGN.md, "Merkle trees")."""
        return bool(
            self.client.call(self.game.functions.verifyProof(root, n, index, leaf, list(siblings)))
        )

    # ------------------------------------------------------------ governance

    def govern(
        self, governance: LocalAccount, contract: str, function: str, *args: Any
    ) -> TxResult:
        """Call a governance-only setter, e.g. ``govern(gov, "game", "setTimeouts", 60, 60, 60, 60)``."""
        c: Contract = getattr(self, contract)
        return self._tx(governance, c.functions[function](*args), f"{contract}.{function}")
