// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Governed} from "./Governed.sol";
import {MerkleVerifier} from "./MerkleVerifier.sol";
import {IDisputeGame, IStaking, ITaskMarket, Outcome} from "./IProtocol.sol";

/// @notice The Verde dispute game (DESIGN.md, data flow step 5).
///
/// Level 1: the parties bisect over their committed interval roots; every revealed
/// root is proven against its party's trace root with the normative Merkle tree.
/// Level 2: inside the first disputed interval, each party commits a tree of step
/// roots whose first leaf is the agreed interval start and whose last leaf is its own
/// committed interval end, and they bisect again. Level 3: both post the CID and root
/// of their operator trace for the disputed step (the canonical JSON of ree.optrace,
/// stored under a CID, and the Merkle root over its records); a referee drawn from the
/// staking pool after that rules, by transaction or by an EIP-712 signature bound to
/// chain id, contract, dispute id and a deadline. While the referee works, either party
/// may name the CID of the disputed op's inputs (postOpInputs, no round, no deadline);
/// the referee checks them against both traces, re-executes that one op, and its
/// ruling (ruleOp) names the first bad op on chain. The loser may appeal once to a second referee;
/// a first referee proven wrong is slashed, and so is any referee that misses its deadline.
///
/// Every move has a deadline and a missed deadline loses. Rounds (moves of the parties):
/// ceil(log2(intervals)) + 1 + ceil(log2(commitInterval)) + 1 at most.
contract DisputeGame is Governed, EIP712, IDisputeGame {
    uint256 internal constant BPS = 10_000;
    bytes32 public constant VERDICT_TYPEHASH = keccak256("Verdict(uint256 disputeId,bool defenderWins,uint256 deadline)");

    enum Stage {
        None,
        Bisect,
        StepRoots,
        OpTraces,
        AwaitReferee,
        Ruling,
        Appealable,
        Resolved
    }

    struct Dispute {
        uint256 taskId;
        uint256 slot;
        address client;
        address defender;
        address challenger;
        uint256 bond;
        uint64 steps;
        uint64 commitInterval;
        Stage stage;
        uint8 level;
        uint8 moved; // bit 0: the defender has moved this round; bit 1: the challenger
        uint32 rounds;
        uint64 deadline;
        uint64 n; // leaves of the trees at this level
        uint64 lo; // the highest index known to agree
        uint64 hi; // the lowest index known to disagree
        uint64 query;
        uint64 interval; // the disputed interval (level 1 result)
        uint64 step; // the disputed optimizer step, 1-based (level 2 result)
        bytes32 rootD;
        bytes32 rootC;
        bytes32 agreed; // the agreed leaf at `lo`
        bytes32 hiD;
        bytes32 hiC;
        bytes32 ansD;
        bytes32 ansC;
        bytes32 opRootD;
        bytes32 opRootC;
        uint64 badOp; // the first bad op the last ruling named, plus one (0: none named)
        address referee;
        uint256 refereeBond;
        address firstReferee;
        uint256 firstRefereeBond;
        address lastTimedOut;
        bool appealed;
        bool firstVerdict; // defenderWins, from the first referee
        Outcome outcome;
    }

    IStaking public immutable staking;
    ITaskMarket public immutable market;

    uint256 public moveTimeout = 1 hours;
    uint256 public refereeTimeout = 1 days;
    uint256 public appealWindow = 1 days;
    uint256 public noRefereeTimeout = 1 days;
    uint256 public winnerShareBps = 5_000; // of the loser's bond to the winner; the rest is burned

    uint256 public disputeCount;
    mapping(uint256 => Dispute) internal _disputes;

    error NotMarket(address caller);
    error UnknownDispute(uint256 disputeId);
    error WrongStage(uint256 disputeId, Stage stage);
    error NotParty(address caller);
    error AlreadyMoved(address party);
    error NotReferee(address caller, address referee);
    error NotLoser(address caller);
    error BadProof();
    error TooEarly(uint256 now_, uint256 deadline);
    error TooLate(uint256 now_, uint256 deadline);
    error SignatureExpired(uint256 now_, uint256 deadline);
    error NoRefereeAvailable(uint256 disputeId);

    event DisputeOpened(uint256 indexed disputeId, uint256 indexed taskId, uint256 slot, address defender, address challenger, uint64 leaves);
    event Query(uint256 indexed disputeId, uint8 level, uint64 index, uint64 deadline);
    event Answered(uint256 indexed disputeId, address indexed party, uint8 level, uint64 index, bytes32 leaf);
    event StepRootsRequested(uint256 indexed disputeId, uint64 interval, uint64 steps, bytes32 startRoot, uint64 deadline);
    event StepRootPosted(uint256 indexed disputeId, address indexed party, bytes32 root);
    event OpTracesRequested(uint256 indexed disputeId, uint64 step, bytes32 preStateRoot, uint64 deadline);
    event OpTracePosted(uint256 indexed disputeId, address indexed party, string cid, bytes32 root);
    event RefereeDrawn(uint256 indexed disputeId, address indexed referee, uint64 deadline);
    event RefereeSlashed(uint256 indexed disputeId, address indexed referee, uint256 amount);
    event Ruled(uint256 indexed disputeId, address indexed referee, bool defenderWins, bool appeal);
    event OpInputsPosted(uint256 indexed disputeId, address indexed party, uint64 op, string cid);
    event RuledOp(uint256 indexed disputeId, address indexed referee, uint64 op);
    event Appealed(uint256 indexed disputeId, address indexed by);
    event Resolved(uint256 indexed disputeId, Outcome outcome, uint32 rounds);

    constructor(IStaking staking_, ITaskMarket market_, address governance_)
        Governed(governance_)
        EIP712("GensynDisputeGame", "1")
    {
        staking = staking_;
        market = market_;
    }

    // ---------------------------------------------------------------- governance

    function setTimeouts(uint256 move, uint256 referee, uint256 appealTime, uint256 noReferee) external onlyGovernance {
        if (move < 10 || move > 7 days) revert ParameterOutOfRange("moveTimeout", move);
        if (referee < 10 || referee > 7 days) revert ParameterOutOfRange("refereeTimeout", referee);
        if (appealTime < 10 || appealTime > 7 days) revert ParameterOutOfRange("appealWindow", appealTime);
        if (noReferee < 10 || noReferee > 30 days) revert ParameterOutOfRange("noRefereeTimeout", noReferee);
        (moveTimeout, refereeTimeout, appealWindow, noRefereeTimeout) = (move, referee, appealTime, noReferee);
        emit ParameterSet("moveTimeout", move);
        emit ParameterSet("refereeTimeout", referee);
        emit ParameterSet("appealWindow", appealTime);
        emit ParameterSet("noRefereeTimeout", noReferee);
    }

    function setWinnerShareBps(uint256 v) external onlyGovernance {
        if (v > BPS) revert ParameterOutOfRange("winnerShareBps", v);
        winnerShareBps = v;
        emit ParameterSet("winnerShareBps", v);
    }

    /// @notice A nominal bound on a dispute's length: 64 bisections per level, the two
    /// commitment rounds, both rulings, the appeal window and one wait for a referee.
    function maxDisputeDuration() external view returns (uint256) {
        return 130 * moveTimeout + 2 * (refereeTimeout + noRefereeTimeout) + appealWindow;
    }

    // ---------------------------------------------------------------- opening

    /// @notice Open a dispute; called by the market when a slot is challenged.
    function open(OpenArgs calldata a) external returns (uint256 id) {
        if (msg.sender != address(market)) revert NotMarket(msg.sender);
        id = ++disputeCount;
        Dispute storage d = _disputes[id];
        d.taskId = a.taskId;
        d.slot = a.slot;
        d.client = a.client;
        d.defender = a.defender;
        d.challenger = a.challenger;
        d.bond = a.bond;
        d.steps = a.steps;
        d.commitInterval = a.commitInterval;
        d.stage = Stage.Bisect;
        d.level = 1;
        d.n = a.leaves;
        d.hi = a.leaves - 1; // both final leaves were proven by the market and differ
        d.rootD = a.rootD;
        d.rootC = a.rootC;
        d.agreed = a.initialRoot; // leaf 0 is the task's initial root, on chain since posting
        d.hiD = a.finalD;
        d.hiC = a.finalC;
        emit DisputeOpened(id, a.taskId, a.slot, a.defender, a.challenger, a.leaves);
        _next(id, d);
    }

    // ---------------------------------------------------------------- the parties' moves

    /// @notice Answer the current bisection query with your leaf there and its proof.
    function respond(uint256 id, bytes32 leaf, bytes32[] calldata proof) external {
        Dispute storage d = _stage(id, Stage.Bisect);
        uint8 bit = _move(d);
        bytes32 root = bit == 1 ? d.rootD : d.rootC;
        if (!MerkleVerifier.verify(root, d.n, d.query, leaf, proof)) revert BadProof();
        if (bit == 1) d.ansD = leaf;
        else d.ansC = leaf;
        emit Answered(id, msg.sender, d.level, d.query, leaf);
        if (d.moved != 3) return;
        if (d.ansD == d.ansC) {
            d.lo = d.query;
            d.agreed = d.ansD;
        } else {
            d.hi = d.query;
            (d.hiD, d.hiC) = (d.ansD, d.ansC);
        }
        d.rounds += 1;
        _next(id, d);
    }

    /// @notice Commit your step roots inside the disputed interval: a tree whose leaf 0 is
    /// the agreed start and whose last leaf is your own committed interval end.
    function postStepRoot(uint256 id, bytes32 root, bytes32[] calldata startProof, bytes32[] calldata endProof) external {
        Dispute storage d = _stage(id, Stage.StepRoots);
        uint8 bit = _move(d);
        if (!MerkleVerifier.verify(root, d.n, 0, d.agreed, startProof)) revert BadProof();
        if (!MerkleVerifier.verify(root, d.n, d.n - 1, bit == 1 ? d.hiD : d.hiC, endProof)) revert BadProof();
        if (bit == 1) d.ansD = root;
        else d.ansC = root;
        emit StepRootPosted(id, msg.sender, root);
        if (d.moved != 3) return;
        (d.rootD, d.rootC) = (d.ansD, d.ansC);
        d.level = 2;
        d.lo = 0;
        d.hi = d.n - 1;
        d.stage = Stage.Bisect;
        d.rounds += 1;
        _next(id, d);
    }

    /// @notice Post the CID and root of your operator trace of the disputed step.
    function postOpTrace(uint256 id, string calldata cid, bytes32 root) external {
        Dispute storage d = _stage(id, Stage.OpTraces);
        uint8 bit = _move(d);
        if (bit == 1) d.opRootD = root;
        else d.opRootC = root;
        emit OpTracePosted(id, msg.sender, cid, root);
        if (d.moved != 3) return;
        d.rounds += 1;
        _drawReferee(id, d);
    }

    // ---------------------------------------------------------------- referees

    /// @notice The referee rules by transaction.
    function rule(uint256 id, bool defenderWins) external {
        _rule(id, defenderWins);
    }

    /// @notice The referee rules and names the first bad operator of the disputed step.
    function ruleOp(uint256 id, bool defenderWins, uint64 op) external {
        Dispute storage d = _rule(id, defenderWins);
        d.badOp = op + 1;
        emit RuledOp(id, msg.sender, op);
    }

    /// @notice A party names the CID of the inputs of op `op` (the first op where the two
    /// traces part) for the referee; the referee checks every input against both traces.
    function postOpInputs(uint256 id, uint64 op, string calldata cid) external {
        Dispute storage d = _disputes[id];
        if (d.stage != Stage.Ruling && d.stage != Stage.AwaitReferee) revert WrongStage(id, d.stage);
        if (msg.sender != d.defender && msg.sender != d.challenger) revert NotParty(msg.sender);
        emit OpInputsPosted(id, msg.sender, op, cid);
    }

    function _rule(uint256 id, bool defenderWins) internal returns (Dispute storage d) {
        d = _stage(id, Stage.Ruling);
        if (msg.sender != d.referee) revert NotReferee(msg.sender, d.referee);
        if (block.timestamp > d.deadline) revert TooLate(block.timestamp, d.deadline);
        _verdict(id, d, defenderWins);
    }

    /// @notice Anyone submits the referee's EIP-712 signed verdict, bound to this chain,
    /// this contract, this dispute and a deadline.
    function ruleBySig(uint256 id, bool defenderWins, uint256 sigDeadline, bytes calldata signature) external {
        Dispute storage d = _stage(id, Stage.Ruling);
        if (block.timestamp > sigDeadline) revert SignatureExpired(block.timestamp, sigDeadline);
        if (block.timestamp > d.deadline) revert TooLate(block.timestamp, d.deadline);
        address signer = ECDSA.recover(verdictDigest(id, defenderWins, sigDeadline), signature);
        if (signer != d.referee) revert NotReferee(signer, d.referee);
        _verdict(id, d, defenderWins);
    }

    /// @notice The EIP-712 digest a referee signs.
    function verdictDigest(uint256 id, bool defenderWins, uint256 sigDeadline) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VERDICT_TYPEHASH, id, defenderWins, sigDeadline)));
    }

    /// @notice The loser of the first verdict appeals, once, to a second referee.
    function appeal(uint256 id) external {
        Dispute storage d = _stage(id, Stage.Appealable);
        if (block.timestamp > d.deadline) revert TooLate(block.timestamp, d.deadline);
        address loser = d.firstVerdict ? d.challenger : d.defender;
        if (msg.sender != loser) revert NotLoser(msg.sender);
        d.appealed = true;
        emit Appealed(id, msg.sender);
        _drawReferee(id, d);
    }

    /// @notice Anyone advances a dispute whose deadline has passed: a party that did not
    /// move loses; a referee that did not rule is slashed and replaced; an unappealed
    /// verdict becomes final; a dispute no referee could take ends with no contest.
    function timeout(uint256 id) external {
        Dispute storage d = _disputes[id];
        Stage st = d.stage;
        if (st == Stage.None) revert UnknownDispute(id);
        if (st == Stage.AwaitReferee) {
            _drawReferee(id, d);
            if (d.stage != Stage.AwaitReferee) return;
            if (block.timestamp <= d.deadline) revert NoRefereeAvailable(id);
            if (d.appealed) _final(id, d, d.firstVerdict, false);
            else _resolve(id, d, Outcome.NoContest);
            return;
        }
        if (st == Stage.Resolved) revert WrongStage(id, st);
        if (block.timestamp <= d.deadline) revert TooEarly(block.timestamp, d.deadline + 1);
        if (st == Stage.Ruling) {
            address ref = d.referee;
            uint256 amount = d.refereeBond;
            d.referee = address(0);
            d.lastTimedOut = ref;
            staking.slash(ref, amount, address(0), 0);
            emit RefereeSlashed(id, ref, amount);
            _drawReferee(id, d);
        } else if (st == Stage.Appealable) {
            _final(id, d, d.firstVerdict, false);
        } else if (d.moved == 1) {
            _resolve(id, d, Outcome.DefenderWon);
        } else if (d.moved == 2) {
            _resolve(id, d, Outcome.ChallengerWon);
        } else {
            _resolve(id, d, Outcome.BothLost);
        }
    }

    // ---------------------------------------------------------------- views

    function getDispute(uint256 id) external view returns (Dispute memory) {
        return _disputes[id];
    }

    function partiesOf(uint256 id) external view returns (address defender, address challenger) {
        Dispute storage d = _disputes[id];
        return (d.defender, d.challenger);
    }

    /// @notice The normative Merkle verifier, exposed for tests and off-chain checks.
    function verifyProof(bytes32 root, uint256 n, uint256 index, bytes32 leaf, bytes32[] calldata siblings)
        external
        pure
        returns (bool)
    {
        return MerkleVerifier.verify(root, n, index, leaf, siblings);
    }

    /// @notice The most rounds a dispute over `leaves` interval leaves of `commitInterval` steps can take.
    function roundBound(uint64 leaves, uint64 commitInterval) external pure returns (uint256) {
        return Math.log2(leaves - 1, Math.Rounding.Ceil) + Math.log2(commitInterval, Math.Rounding.Ceil) + 2;
    }

    // ---------------------------------------------------------------- internals

    function _stage(uint256 id, Stage want) internal view returns (Dispute storage d) {
        d = _disputes[id];
        if (d.stage == Stage.None) revert UnknownDispute(id);
        if (d.stage != want) revert WrongStage(id, d.stage);
    }

    /// Marks the caller's move in this round; returns 1 for the defender, 2 for the challenger.
    function _move(Dispute storage d) internal returns (uint8 bit) {
        if (msg.sender == d.defender) bit = 1;
        else if (msg.sender == d.challenger) bit = 2;
        else revert NotParty(msg.sender);
        if (d.moved & bit != 0) revert AlreadyMoved(msg.sender);
        if (block.timestamp > d.deadline) revert TooLate(block.timestamp, d.deadline);
        d.moved |= bit;
    }

    /// Sets up the next round: another bisection query, the step-root commitments, or the operator traces.
    function _next(uint256 id, Dispute storage d) internal {
        d.moved = 0;
        d.deadline = uint64(block.timestamp + moveTimeout);
        if (d.hi - d.lo > 1) {
            d.query = (d.lo + d.hi) / 2;
            emit Query(id, d.level, d.query, d.deadline);
            return;
        }
        if (d.level == 1) {
            d.interval = d.lo;
            uint64 start = d.lo * d.commitInterval;
            uint64 m = uint64(Math.min(uint256(d.hi) * d.commitInterval, d.steps)) - start;
            if (m > 1) {
                d.stage = Stage.StepRoots;
                d.n = m + 1;
                emit StepRootsRequested(id, d.interval, m, d.agreed, d.deadline);
                return;
            }
            d.step = start + 1;
        } else {
            d.step = d.interval * d.commitInterval + d.hi;
        }
        d.stage = Stage.OpTraces;
        emit OpTracesRequested(id, d.step, d.agreed, d.deadline);
    }

    function _drawReferee(uint256 id, Dispute storage d) internal {
        uint256 seed = uint256(keccak256(abi.encode(block.prevrandao, blockhash(block.number - 1), id, d.lastTimedOut)));
        address ref = staking.drawReferee(seed, [d.client, d.defender, d.challenger, d.firstReferee, d.lastTimedOut]);
        if (ref == address(0)) {
            if (d.stage != Stage.AwaitReferee) {
                d.stage = Stage.AwaitReferee;
                d.deadline = uint64(block.timestamp + noRefereeTimeout);
            }
            return;
        }
        d.referee = ref;
        d.refereeBond = staking.refereeBond();
        d.stage = Stage.Ruling;
        d.deadline = uint64(block.timestamp + refereeTimeout);
        emit RefereeDrawn(id, ref, d.deadline);
    }

    function _verdict(uint256 id, Dispute storage d, bool defenderWins) internal {
        emit Ruled(id, d.referee, defenderWins, d.appealed);
        if (!d.appealed) {
            d.firstReferee = d.referee;
            d.firstRefereeBond = d.refereeBond;
            d.firstVerdict = defenderWins;
            d.referee = address(0);
            d.stage = Stage.Appealable;
            d.deadline = uint64(block.timestamp + appealWindow);
            return;
        }
        staking.unlock(d.referee, d.refereeBond);
        _final(id, d, defenderWins, defenderWins != d.firstVerdict);
    }

    /// Ends a ruled dispute; a first referee overturned on appeal is slashed, otherwise released.
    function _final(uint256 id, Dispute storage d, bool defenderWins, bool overturned) internal {
        if (overturned) {
            staking.slash(d.firstReferee, d.firstRefereeBond, address(0), 0);
            emit RefereeSlashed(id, d.firstReferee, d.firstRefereeBond);
        } else {
            staking.unlock(d.firstReferee, d.firstRefereeBond);
        }
        _resolve(id, d, defenderWins ? Outcome.DefenderWon : Outcome.ChallengerWon);
    }

    function _resolve(uint256 id, Dispute storage d, Outcome outcome) internal {
        d.stage = Stage.Resolved;
        d.outcome = outcome;
        uint256 reward = Math.mulDiv(d.bond, winnerShareBps, BPS);
        if (outcome == Outcome.DefenderWon) {
            staking.slash(d.challenger, d.bond, d.defender, reward);
        } else if (outcome == Outcome.ChallengerWon) {
            staking.slash(d.defender, d.bond, d.challenger, reward);
        } else if (outcome == Outcome.BothLost) {
            staking.slash(d.defender, d.bond, address(0), 0);
            staking.slash(d.challenger, d.bond, address(0), 0);
        }
        emit Resolved(id, outcome, d.rounds);
        market.onDisputeResolved(d.taskId, d.slot, id, outcome);
    }
}
