// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {Governed} from "./Governed.sol";
import {MerkleVerifier} from "./MerkleVerifier.sol";
import {IBurnableToken, IDisputeGame, IStaking, ITaskMarket, Outcome} from "./IProtocol.sol";

/// @notice Tasks, claims, commit-reveal of results, spot checks, challenges and
/// settlement (DESIGN.md, data flow steps 2-4 and 6).
///
/// A task has `replicas` slots (policy replicate k) or one slot with `spotChecks`
/// paid checks (policy spot s). Each slot settles on its own: paid after its
/// challenge window, slashed after a missed deadline or a lost dispute, or
/// refunded when nobody claimed it. Money only ever moves into a credit, which
/// its owner withdraws (credit-then-withdraw).
///
/// Availability (issue #6): a solver keeps its checkpoints available until its
/// slot settles. During the challenge window a staked verifier may demand the
/// checkpoint behind any leaf of a revealed trace (demandCheckpoint, bonded).
/// The solver answers by serving the whole state on chain (serveCheckpoint):
/// the canonical encodings of its leaves, from which the contract recomputes
/// the normative state root and proves it against the trace root, so a served
/// checkpoint is both correct and readable by everyone from the chain's history.
/// The challenge window pauses while a demand is open. A solver that does not
/// serve before dataWindow passes is slashed by anyone (dataTimeout): part of its
/// bond to the demander, the rest burned, and the client is refunded.
contract TaskMarket is Governed, ReentrancyGuard, ITaskMarket {
    using SafeERC20 for IERC20;

    uint256 public constant MAX_FEE_BPS = 500; // the fee rate is capped at 5%
    uint256 internal constant BPS = 10_000;

    enum SlotState {
        Open,
        Claimed,
        Committed,
        Revealed,
        Disputed,
        Paid,
        Slashed,
        Expired,
        Demanded // a checkpoint was demanded and not yet served (availability)
    }

    struct TaskParams {
        string specCid;
        uint256 budget;
        bytes32 initialRoot;
        uint64 commitInterval;
        uint64 totalSteps;
        uint64 claimWindow;
        uint64 workWindow;
        uint64 revealWindow;
        uint64 challengeWindow;
        uint8 replicas;
        uint8 spotChecks;
        uint256 bond;
        uint256 verifierFee;
    }

    struct Task {
        TaskParams p;
        address client;
        uint64 postedAt;
        uint8 claimed;
        uint8 committed;
        uint8 settled;
        uint8 spotReserved;
        uint8 spotPaid;
        uint64 clockAt; // claim and work windows run from here: the post, or the last reopen
        uint8 reopens;
    }

    struct Reveal {
        bool failed; // a failure commit: the trace up to the failing step, finalRoot = the error digest
        bytes32 traceRoot;
        uint64 steps;
        bytes32 finalRoot;
        string manifestCid;
        string resultCid;
        bytes32 salt;
    }

    struct Slot {
        address solver;
        SlotState state;
        bool failed;
        uint64 steps;
        uint64 revealedAt;
        bytes32 commitment;
        bytes32 traceRoot;
        bytes32 finalRoot;
        bytes32 seed; // spot-check randomness: set at the reveal, fixed by the next block's hash
        uint256 dispute;
        string manifestCid;
        string resultCid;
    }

    struct Demand {
        address by;
        uint64 index; // the trace leaf whose checkpoint is demanded
        uint64 demandedAt;
        uint64 deadline;
        uint8 count; // demands made on this slot so far
    }

    IERC20 public immutable token;
    IStaking public immutable staking;
    IDisputeGame public game;

    uint256 public feeBps = 50; // 0.5%, burned
    uint256 public slashRewardBps = 5_000; // a timed-out solver's bond: this part to the client, the rest burned
    uint256 public minChallengeWindow = 60;
    uint8 public constant MAX_REOPENS = 3;
    uint8 public constant MAX_DEMANDS = 4; // per slot, so the window cannot be paused for ever
    uint256 public dataWindow = 1 hours; // to serve a demanded checkpoint

    uint256 public taskCount;
    mapping(uint256 => Task) internal _tasks;
    mapping(uint256 => mapping(uint256 => Slot)) internal _slots;
    mapping(bytes32 => bytes32) internal _spotCommitments; // keccak(taskId, slot, verifier) => commitment
    mapping(bytes32 => bool) internal _spotCommits; // ... => revealed and paid
    mapping(uint256 => mapping(uint256 => Demand)) internal _demands;
    mapping(uint256 => mapping(uint256 => uint64)) internal _revealBlock; // 0 once the seed is fixed
    mapping(address => uint256) public credits;
    mapping(uint256 => mapping(uint256 => string)) public progressCid; // the latest progress manifest of a slot
    uint256 public totalEscrow;
    uint256 public totalCredits;

    error ZeroAmount();
    error AlreadyWired();
    error NotGame(address caller);
    error BadTaskParams(string what);
    error UnknownTask(uint256 taskId);
    error WrongState(uint256 taskId, uint256 slot, SlotState state);
    error NotSolver(address caller);
    error TooEarly(uint256 now_, uint256 allowedAt);
    error TooLate(uint256 now_, uint256 deadline);
    error NoFreeSlot(uint256 taskId);
    error AlreadyClaimed(uint256 taskId, address solver);
    error ClientCannotSolve(address client);
    error RevealPhaseNotOpen(uint256 taskId);
    error CommitmentMismatch(uint256 taskId, uint256 slot);
    error BadStepCount(uint64 steps, uint64 totalSteps);
    error BadProof();
    error NothingToChallenge(uint256 taskId, uint256 slot);
    error SelfChallenge(address solver);
    error SpotChecksExhausted(uint256 taskId);
    error NotStaked(address verifier);
    error NoSpotCommit(address verifier);
    error AlreadyCommitted(address verifier);
    error NothingToWithdraw(address account);
    error NotClient(address caller);
    error AlreadyClaimedTask(uint256 taskId);
    error TooManyReopens(uint256 taskId);
    error TooManyDemands(uint256 taskId, uint256 slot);
    error BadLeafIndex(uint64 index);
    error SeedNotReady(uint256 taskId, uint256 slot);

    event TaskPosted(uint256 indexed taskId, address indexed client, string specCid, uint256 budget, uint8 replicas, uint8 spotChecks);
    event Claimed(uint256 indexed taskId, uint256 slot, address indexed solver);
    event Committed(uint256 indexed taskId, uint256 slot, address indexed solver, bytes32 commitment);
    event Revealed(uint256 indexed taskId, uint256 slot, address indexed solver, bool failed, bytes32 traceRoot, uint64 steps, bytes32 finalRoot, string manifestCid, string resultCid);
    event SpotCommitted(uint256 indexed taskId, uint256 slot, address indexed verifier, bytes32 commitment);
    event SpotChecked(uint256 indexed taskId, uint256 slot, address indexed verifier, uint64 index, bool agrees, uint256 fee);
    event Challenged(uint256 indexed taskId, uint256 slot, uint256 indexed disputeId, address indexed challenger);
    event DisputeSettled(uint256 indexed taskId, uint256 slot, uint256 indexed disputeId, Outcome outcome);
    event Paid(uint256 indexed taskId, uint256 slot, address indexed solver, uint256 pay, uint256 feeBurned);
    event SlotSlashed(uint256 indexed taskId, uint256 slot, address indexed solver, uint256 bond);
    event SlotExpired(uint256 indexed taskId, uint256 slot);
    event Refunded(uint256 indexed taskId, address indexed client, uint256 amount);
    event Withdrawn(address indexed account, uint256 amount);
    event Progress(uint256 indexed taskId, uint256 slot, address indexed solver, string cid);
    event SlotReopened(uint256 indexed taskId, uint256 slot, address indexed solver);
    event TaskCancelled(uint256 indexed taskId);
    event SeedFixed(uint256 indexed taskId, uint256 slot, bytes32 seed);
    event CheckpointDemanded(uint256 indexed taskId, uint256 slot, address indexed by, uint64 index, uint64 deadline);
    event CheckpointServed(uint256 indexed taskId, uint256 slot, uint64 index, bytes32 stateRoot, uint256 leaves);
    event CheckpointWithheld(uint256 indexed taskId, uint256 slot, address indexed solver, address indexed by, uint64 index);

    constructor(IERC20 token_, IStaking staking_, address governance_) Governed(governance_) {
        token = token_;
        staking = staking_;
    }

    // ---------------------------------------------------------------- governance

    /// @notice Names the dispute game, once.
    function wire(IDisputeGame game_) external onlyGovernance {
        if (address(game) != address(0)) revert AlreadyWired();
        if (address(game_) == address(0)) revert ZeroAddress();
        game = game_;
    }

    function setFeeBps(uint256 v) external onlyGovernance {
        if (v > MAX_FEE_BPS) revert ParameterOutOfRange("feeBps", v);
        feeBps = v;
        emit ParameterSet("feeBps", v);
    }

    function setSlashRewardBps(uint256 v) external onlyGovernance {
        if (v > BPS) revert ParameterOutOfRange("slashRewardBps", v);
        slashRewardBps = v;
        emit ParameterSet("slashRewardBps", v);
    }

    function setDataWindow(uint256 v) external onlyGovernance {
        if (v < 10 || v > 7 days) revert ParameterOutOfRange("dataWindow", v);
        dataWindow = v;
        emit ParameterSet("dataWindow", v);
    }

    function setMinChallengeWindow(uint256 v) external onlyGovernance {
        if (v == 0 || v > 30 days) revert ParameterOutOfRange("minChallengeWindow", v);
        minChallengeWindow = v;
        emit ParameterSet("minChallengeWindow", v);
    }

    // ---------------------------------------------------------------- client

    /// @notice Post a task and escrow its budget plus the spot-check fees (step 2).
    function postTask(TaskParams calldata p) external nonReentrant returns (uint256 taskId) {
        _checkParams(p);
        uint256 escrow = p.budget + uint256(p.spotChecks) * p.verifierFee;
        taskId = ++taskCount;
        Task storage t = _tasks[taskId];
        t.p = p;
        t.client = msg.sender;
        t.postedAt = uint64(block.timestamp);
        t.clockAt = uint64(block.timestamp);
        totalEscrow += escrow;
        emit TaskPosted(taskId, msg.sender, p.specCid, p.budget, p.replicas, p.spotChecks);
        token.safeTransferFrom(msg.sender, address(this), escrow);
    }

    function _checkParams(TaskParams calldata p) internal view {
        if (p.budget == 0) revert ZeroAmount();
        if (p.replicas == 0) revert BadTaskParams("replicas must be at least 1");
        if (p.spotChecks > 0 && p.replicas != 1) revert BadTaskParams("spot policy takes exactly one replica");
        if (p.commitInterval == 0 || p.totalSteps == 0) revert BadTaskParams("commitInterval and totalSteps must be positive");
        if (p.claimWindow == 0 || p.workWindow == 0 || p.revealWindow == 0) revert BadTaskParams("windows must be positive");
        if (p.challengeWindow < minChallengeWindow) revert BadTaskParams("challengeWindow below the minimum");
        if (p.bond == 0) revert BadTaskParams("bond must be positive");
        if (p.challengeWindow + MAX_DEMANDS * dataWindow + game.maxDisputeDuration() > staking.unbondingDelay()) {
            revert BadTaskParams("challengeWindow plus the longest dispute exceeds the unbonding delay");
        }
    }

    // ---------------------------------------------------------------- solver

    /// @notice Claim the next free slot; locks the bond in Staking (step 3).
    function claim(uint256 taskId) external returns (uint256 slot) {
        Task storage t = _task(taskId);
        if (msg.sender == t.client) revert ClientCannotSolve(msg.sender);
        uint256 deadline = t.clockAt + t.p.claimWindow;
        if (block.timestamp > deadline) revert TooLate(block.timestamp, deadline);
        slot = t.p.replicas;
        for (uint256 i; i < t.p.replicas; ++i) {
            Slot storage s = _slots[taskId][i];
            if (s.solver == msg.sender) revert AlreadyClaimed(taskId, msg.sender);
            if (slot == t.p.replicas && s.state == SlotState.Open) slot = i;
        }
        if (slot == t.p.replicas) revert NoFreeSlot(taskId);
        Slot storage s2 = _slots[taskId][slot];
        s2.solver = msg.sender;
        s2.state = SlotState.Claimed;
        t.claimed += 1;
        staking.lock(msg.sender, t.p.bond);
        emit Claimed(taskId, slot, msg.sender);
    }

    /// @notice Commit to a result: keccak256(abi.encode(taskId, slot, solver, reveal)), `reveal` the
    /// Reveal tuple (failed, traceRoot, steps, finalRoot, manifestCid, resultCid, salt). It binds the solver and a salt.
    function commit(uint256 taskId, uint256 slot, bytes32 commitment) external {
        Task storage t = _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Claimed);
        if (msg.sender != s.solver) revert NotSolver(msg.sender);
        uint256 deadline = _commitDeadline(t);
        if (block.timestamp > deadline) revert TooLate(block.timestamp, deadline);
        s.commitment = commitment;
        s.state = SlotState.Committed;
        t.committed += 1;
        emit Committed(taskId, slot, msg.sender, commitment);
    }

    /// @notice Reveal a committed result or failure. Reveals open once every slot has
    /// committed or the commit deadline has passed, so nobody commits after seeing a reveal.
    function reveal(uint256 taskId, uint256 slot, Reveal calldata r, bytes32[] calldata finalProof) external {
        Task storage t = _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Committed);
        if (msg.sender != s.solver) revert NotSolver(msg.sender);
        uint256 commitDeadline = _commitDeadline(t);
        if (t.committed < t.p.replicas && block.timestamp <= commitDeadline) revert RevealPhaseNotOpen(taskId);
        if (block.timestamp > commitDeadline + t.p.revealWindow) revert TooLate(block.timestamp, commitDeadline + t.p.revealWindow);
        if (keccak256(abi.encode(taskId, slot, msg.sender, r)) != s.commitment) revert CommitmentMismatch(taskId, slot);
        if (r.failed ? r.steps >= t.p.totalSteps : r.steps != t.p.totalSteps) revert BadStepCount(r.steps, t.p.totalSteps);
        uint64 n = leafCount(r.steps, t.p.commitInterval);
        if (!MerkleVerifier.verify(r.traceRoot, n, n - 1, r.finalRoot, finalProof)) revert BadProof();
        _storeReveal(taskId, slot, s, r);
    }

    function _storeReveal(uint256 taskId, uint256 slot, Slot storage s, Reveal calldata r) internal {
        s.state = SlotState.Revealed;
        s.failed = r.failed;
        s.steps = r.steps;
        s.revealedAt = uint64(block.timestamp);
        s.traceRoot = r.traceRoot;
        s.finalRoot = r.finalRoot;
        s.manifestCid = r.manifestCid;
        s.resultCid = r.resultCid;
        s.seed = keccak256(abi.encode(block.prevrandao, blockhash(block.number - 1), taskId, slot));
        _revealBlock[taskId][slot] = uint64(block.number);
        emit Revealed(taskId, slot, s.solver, r.failed, r.traceRoot, r.steps, r.finalRoot, r.manifestCid, r.resultCid);
    }

    // ---------------------------------------------------------------- verifiers

    /// @notice A staked verifier commits to a spot check: keccak256(abi.encode(taskId, slot, verifier, agrees, salt)).
    function spotCommit(uint256 taskId, uint256 slot, bytes32 commitment) external {
        Task storage t = _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Revealed);
        _inChallengeWindow(t, s);
        if (msg.sender == s.solver) revert SelfChallenge(msg.sender);
        (uint256 staked,,,) = IStakingView(address(staking)).accountOf(msg.sender);
        if (staked < t.p.bond) revert NotStaked(msg.sender);
        if (t.spotReserved >= t.p.spotChecks) revert SpotChecksExhausted(taskId);
        bytes32 key = keccak256(abi.encode(taskId, slot, msg.sender));
        if (commitment == bytes32(0) || _spotCommitments[key] != bytes32(0)) revert AlreadyCommitted(msg.sender);
        _fixSeed(taskId, slot, s);
        _spotCommitments[key] = commitment;
        t.spotReserved += 1;
        emit SpotCommitted(taskId, slot, msg.sender, commitment);
    }

    /// @notice Reveal a spot check: prove the interval root at the drawn index against the
    /// solver's trace root, say whether it agrees, and earn the fee. A disagreeing verifier challenges.
    function spotReveal(uint256 taskId, uint256 slot, bool agrees, bytes32 salt, bytes32 leaf, bytes32[] calldata proof)
        external
    {
        Task storage t = _task(taskId);
        Slot storage s = _slots[taskId][slot];
        if (s.state != SlotState.Revealed && s.state != SlotState.Disputed && s.state != SlotState.Demanded) {
            revert WrongState(taskId, slot, s.state);
        }
        if (s.state != SlotState.Demanded) _inChallengeWindow(t, s);
        bytes32 key = keccak256(abi.encode(taskId, slot, msg.sender));
        if (_spotCommitments[key] == bytes32(0) || _spotCommits[key]) revert NoSpotCommit(msg.sender);
        if (keccak256(abi.encode(taskId, slot, msg.sender, agrees, salt)) != _spotCommitments[key]) {
            revert CommitmentMismatch(taskId, slot);
        }
        uint64 index = spotIndex(taskId, slot, msg.sender);
        if (!MerkleVerifier.verify(s.traceRoot, leafCount(s.steps, t.p.commitInterval), index, leaf, proof)) revert BadProof();
        _spotCommits[key] = true;
        t.spotPaid += 1;
        totalEscrow -= t.p.verifierFee;
        _credit(msg.sender, t.p.verifierFee);
        emit SpotChecked(taskId, slot, msg.sender, index, agrees, t.p.verifierFee);
    }

    /// @notice The interval a verifier must check: drawn from the seed of `drawSeed`.
    function spotIndex(uint256 taskId, uint256 slot, address verifier) public view returns (uint64) {
        Slot storage s = _slots[taskId][slot];
        uint64 n = leafCount(s.steps, _tasks[taskId].p.commitInterval);
        if (n < 2) return 0;
        return uint64(1 + (uint256(keccak256(abi.encode(drawSeed(taskId, slot), verifier))) % (n - 1)));
    }

    /// @notice The spot-check seed: the reveal's seed hashed with the hash of the block AFTER the
    /// reveal, which nobody knows when the reveal is sent, so the solver cannot time its reveal to
    /// steer the draw. It reverts until that block exists; the first spot commit (or anyone, with
    /// fixSeed) stores it. Unfixed for 256 blocks, that hash is gone and the reveal's seed is used.
    function drawSeed(uint256 taskId, uint256 slot) public view returns (bytes32) {
        Slot storage s = _slots[taskId][slot];
        uint64 rb = _revealBlock[taskId][slot];
        if (rb == 0) return s.seed;
        if (block.number <= rb + 1) revert SeedNotReady(taskId, slot);
        bytes32 h = blockhash(rb + 1);
        return h == bytes32(0) ? s.seed : keccak256(abi.encode(s.seed, h));
    }

    /// @notice Anyone stores the spot-check seed once the block after the reveal exists.
    function fixSeed(uint256 taskId, uint256 slot) external {
        _task(taskId);
        _fixSeed(taskId, slot, _slotOf(taskId, slot, SlotState.Revealed));
    }

    function _fixSeed(uint256 taskId, uint256 slot, Slot storage s) internal {
        if (_revealBlock[taskId][slot] == 0) return;
        s.seed = drawSeed(taskId, slot);
        _revealBlock[taskId][slot] = 0;
        emit SeedFixed(taskId, slot, s.seed);
    }

    /// @notice Challenge a revealed slot with a bond: post your own trace root over the same
    /// leaf count, and prove your final leaf, which must differ from the solver's.
    function challenge(uint256 taskId, uint256 slot, bytes32 traceRoot, bytes32 finalLeaf, bytes32[] calldata finalProof)
        external
        returns (uint256 disputeId)
    {
        Task storage t = _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Revealed);
        _inChallengeWindow(t, s);
        if (msg.sender == s.solver) revert SelfChallenge(msg.sender);
        uint64 n = leafCount(s.steps, t.p.commitInterval);
        if (n < 2 || finalLeaf == s.finalRoot) revert NothingToChallenge(taskId, slot);
        if (!MerkleVerifier.verify(traceRoot, n, n - 1, finalLeaf, finalProof)) revert BadProof();
        staking.lock(msg.sender, t.p.bond);
        s.state = SlotState.Disputed;
        disputeId = game.open(
            IDisputeGame.OpenArgs({
                taskId: taskId,
                slot: slot,
                client: t.client,
                defender: s.solver,
                challenger: msg.sender,
                bond: t.p.bond,
                rootD: s.traceRoot,
                rootC: traceRoot,
                finalD: s.finalRoot,
                finalC: finalLeaf,
                initialRoot: t.p.initialRoot,
                leaves: n,
                steps: s.steps,
                commitInterval: t.p.commitInterval
            })
        );
        s.dispute = disputeId;
        emit Challenged(taskId, slot, disputeId, msg.sender);
    }

    // ---------------------------------------------------------------- availability

    /// @notice A staked verifier demands the checkpoint behind leaf `index` of a revealed
    /// trace; its bond is locked until the solver serves it or times out.
    function demandCheckpoint(uint256 taskId, uint256 slot, uint64 index) external {
        Task storage t = _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Revealed);
        _inChallengeWindow(t, s);
        if (msg.sender == s.solver) revert SelfChallenge(msg.sender);
        uint64 n = leafCount(s.steps, t.p.commitInterval);
        // leaf 0 is the task's initial state (public in the bundle); a failure's last leaf is an error digest
        if (index == 0 || index >= (s.failed ? n - 1 : n)) revert BadLeafIndex(index);
        Demand storage dm = _demands[taskId][slot];
        if (dm.count >= MAX_DEMANDS) revert TooManyDemands(taskId, slot);
        staking.lock(msg.sender, t.p.bond);
        dm.by = msg.sender;
        dm.index = index;
        dm.demandedAt = uint64(block.timestamp);
        dm.deadline = uint64(block.timestamp + dataWindow);
        dm.count += 1;
        s.state = SlotState.Demanded;
        emit CheckpointDemanded(taskId, slot, msg.sender, index, dm.deadline);
    }

    /// @notice The solver serves the demanded checkpoint: the canonical encodings of its state
    /// leaves in tree order (DESIGN.md, "The state schema" and "Merkle trees"), and the proof
    /// of their state root at the demanded leaf of its trace. The challenge window resumes.
    function serveCheckpoint(uint256 taskId, uint256 slot, bytes[] calldata leaves, bytes32[] calldata proof) external {
        Task storage t = _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Demanded);
        if (msg.sender != s.solver) revert NotSolver(msg.sender);
        Demand storage dm = _demands[taskId][slot];
        if (block.timestamp > dm.deadline) revert TooLate(block.timestamp, dm.deadline);
        bytes32 root = MerkleVerifier.rootOfEncodings(leaves);
        if (!MerkleVerifier.verify(s.traceRoot, leafCount(s.steps, t.p.commitInterval), dm.index, root, proof)) {
            revert BadProof();
        }
        s.state = SlotState.Revealed;
        s.revealedAt += uint64(block.timestamp) - dm.demandedAt; // the window paused while the demand was open
        staking.unlock(dm.by, t.p.bond);
        emit CheckpointServed(taskId, slot, dm.index, root, leaves.length);
        dm.by = address(0);
    }

    /// @notice Anyone ends a slot whose demanded checkpoint was not served in time: the solver's
    /// bond is slashed (part to the demander, the rest burned) and the client refunded.
    function dataTimeout(uint256 taskId, uint256 slot) external {
        Task storage t = _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Demanded);
        Demand storage dm = _demands[taskId][slot];
        if (block.timestamp <= dm.deadline) revert TooEarly(block.timestamp, dm.deadline + 1);
        address by = dm.by;
        dm.by = address(0);
        s.state = SlotState.Slashed;
        staking.unlock(by, t.p.bond);
        staking.slash(s.solver, t.p.bond, by, Math.mulDiv(t.p.bond, slashRewardBps, BPS));
        emit CheckpointWithheld(taskId, slot, s.solver, by, dm.index);
        emit SlotSlashed(taskId, slot, s.solver, t.p.bond);
        _refund(taskId, _share(t, slot));
        _settle(taskId);
    }

    function getDemand(uint256 taskId, uint256 slot) external view returns (Demand memory) {
        return _demands[taskId][slot];
    }

    /// @notice Called by the dispute game when a dispute over (taskId, slot) ends.
    function onDisputeResolved(uint256 taskId, uint256 slot, uint256 disputeId, Outcome outcome) external {
        if (msg.sender != address(game)) revert NotGame(msg.sender);
        Slot storage s = _slotOf(taskId, slot, SlotState.Disputed);
        Task storage t = _tasks[taskId];
        s.dispute = 0;
        (, address challenger) = IGameView(address(game)).partiesOf(disputeId);
        if (outcome == Outcome.ChallengerWon || outcome == Outcome.NoContest) staking.unlock(challenger, t.p.bond);
        if (outcome == Outcome.DefenderWon || outcome == Outcome.NoContest) {
            s.state = SlotState.Revealed; // finalizable once its challenge window has passed
        } else {
            // the game slashed the solver's bond; the client gets this slot's share back
            s.state = SlotState.Slashed;
            _refund(taskId, _share(t, slot));
            _settle(taskId);
        }
        emit DisputeSettled(taskId, slot, disputeId, outcome);
    }

    // ---------------------------------------------------------------- settlement

    /// @notice Pay a revealed slot after its challenge window (step 6): the budget share, or
    /// for a failure the pay for the steps done; minus the protocol fee, which is burned.
    function finalize(uint256 taskId, uint256 slot) external nonReentrant {
        Task storage t = _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Revealed);
        uint256 end = s.revealedAt + t.p.challengeWindow;
        if (block.timestamp <= end) revert TooEarly(block.timestamp, end + 1);
        uint256 share = _share(t, slot);
        uint256 pay = s.failed ? Math.mulDiv(share, s.steps, t.p.totalSteps) : share;
        uint256 fee = Math.mulDiv(pay, feeBps, BPS);
        s.state = SlotState.Paid;
        staking.unlock(s.solver, t.p.bond);
        totalEscrow -= pay;
        _credit(s.solver, pay - fee);
        if (share > pay) _refund(taskId, share - pay);
        emit Paid(taskId, slot, s.solver, pay - fee, fee);
        _settle(taskId);
        if (fee > 0) IBurnableToken(address(token)).burn(fee);
    }

    /// @notice Anyone ends a slot whose deadline passed: unclaimed (refund), or claimed but
    /// not committed or not revealed in time (the bond is slashed, part to the client, and refund).
    function timeoutSlot(uint256 taskId, uint256 slot) external {
        Task storage t = _task(taskId);
        Slot storage s = _slots[taskId][slot];
        if (slot >= t.p.replicas) revert WrongState(taskId, slot, s.state);
        uint256 deadline;
        if (s.state == SlotState.Open) deadline = t.clockAt + t.p.claimWindow;
        else if (s.state == SlotState.Claimed) deadline = _commitDeadline(t);
        else if (s.state == SlotState.Committed) deadline = _commitDeadline(t) + t.p.revealWindow;
        else revert WrongState(taskId, slot, s.state);
        if (block.timestamp <= deadline) revert TooEarly(block.timestamp, deadline + 1);
        if (s.state == SlotState.Open) {
            s.state = SlotState.Expired;
            emit SlotExpired(taskId, slot);
        } else {
            s.state = SlotState.Slashed;
            uint256 reward = Math.mulDiv(t.p.bond, slashRewardBps, BPS);
            staking.slash(s.solver, t.p.bond, t.client, reward);
            emit SlotSlashed(taskId, slot, s.solver, t.p.bond);
        }
        _refund(taskId, _share(t, slot));
        _settle(taskId);
    }

    /// @notice The client reopens a slot whose solver missed the commit deadline (DESIGN.md,
    /// step 6: "a missed deadline slashes the bond and reopens or refunds the task"). The bond is
    /// slashed as by timeoutSlot; the claim and work windows restart, and the slot's progress
    /// manifest stays, so the next solver can resume from its REE checkpoint.
    function reopenSlot(uint256 taskId, uint256 slot) external {
        Task storage t = _task(taskId);
        if (msg.sender != t.client) revert NotClient(msg.sender);
        Slot storage s = _slotOf(taskId, slot, SlotState.Claimed);
        uint256 deadline = _commitDeadline(t);
        if (block.timestamp <= deadline) revert TooEarly(block.timestamp, deadline + 1);
        if (t.reopens >= MAX_REOPENS) revert TooManyReopens(taskId);
        t.reopens += 1;
        address solver = s.solver;
        s.state = SlotState.Open;
        s.solver = address(0);
        t.claimed -= 1;
        t.clockAt = uint64(block.timestamp);
        staking.slash(solver, t.p.bond, t.client, Math.mulDiv(t.p.bond, slashRewardBps, BPS));
        emit SlotSlashed(taskId, slot, solver, t.p.bond);
        emit SlotReopened(taskId, slot, solver);
    }

    /// @notice The client cancels a task nobody has claimed: every slot expires and the escrow is refunded.
    function cancelTask(uint256 taskId) external {
        Task storage t = _task(taskId);
        if (msg.sender != t.client) revert NotClient(msg.sender);
        if (t.claimed != 0 || t.settled != 0) revert AlreadyClaimedTask(taskId);
        for (uint256 i; i < t.p.replicas; ++i) {
            Slot storage s = _slots[taskId][i];
            if (s.state != SlotState.Open) revert WrongState(taskId, i, s.state);
            s.state = SlotState.Expired;
            _refund(taskId, _share(t, i));
            _settle(taskId);
        }
        emit TaskCancelled(taskId);
    }

    /// @notice A solver names its latest progress manifest (REE checkpoints so far), so that
    /// another solver can resume a reopened slot.
    function reportProgress(uint256 taskId, uint256 slot, string calldata cid) external {
        _task(taskId);
        Slot storage s = _slotOf(taskId, slot, SlotState.Claimed);
        if (msg.sender != s.solver) revert NotSolver(msg.sender);
        progressCid[taskId][slot] = cid;
        emit Progress(taskId, slot, msg.sender, cid);
    }

    function withdraw() external nonReentrant {
        uint256 amount = credits[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        credits[msg.sender] = 0;
        totalCredits -= amount;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ---------------------------------------------------------------- views

    function getTask(uint256 taskId) external view returns (TaskParams memory p, address client, uint64 postedAt, uint8 claimed, uint8 committed, uint8 settled) {
        Task storage t = _task(taskId);
        return (t.p, t.client, t.postedAt, t.claimed, t.committed, t.settled);
    }

    function getSlot(uint256 taskId, uint256 slot) external view returns (Slot memory) {
        return _slots[taskId][slot];
    }

    /// @notice Leaves of a trace over `steps` optimizer steps: the initial root plus one per interval.
    function leafCount(uint64 steps, uint64 commitInterval) public pure returns (uint64) {
        return 1 + (steps + commitInterval - 1) / commitInterval;
    }

    // ---------------------------------------------------------------- internals

    function _task(uint256 taskId) internal view returns (Task storage t) {
        t = _tasks[taskId];
        if (t.client == address(0)) revert UnknownTask(taskId);
    }

    function _slotOf(uint256 taskId, uint256 slot, SlotState want) internal view returns (Slot storage s) {
        s = _slots[taskId][slot];
        if (s.state != want || slot >= _tasks[taskId].p.replicas) revert WrongState(taskId, slot, s.state);
    }

    function _commitDeadline(Task storage t) internal view returns (uint256) {
        return uint256(t.clockAt) + t.p.claimWindow + t.p.workWindow;
    }

    function _inChallengeWindow(Task storage t, Slot storage s) internal view {
        uint256 end = s.revealedAt + t.p.challengeWindow;
        if (block.timestamp > end) revert TooLate(block.timestamp, end);
    }

    /// Slot i's share of the budget; the last slot takes the remainder, so shares sum to the budget.
    function _share(Task storage t, uint256 slot) internal view returns (uint256) {
        uint256 base = t.p.budget / t.p.replicas;
        return slot + 1 == t.p.replicas ? t.p.budget - base * (t.p.replicas - 1) : base;
    }

    function _credit(address account, uint256 amount) internal {
        credits[account] += amount;
        totalCredits += amount;
    }

    function _refund(uint256 taskId, uint256 amount) internal {
        if (amount == 0) return;
        Task storage t = _tasks[taskId];
        totalEscrow -= amount;
        _credit(t.client, amount);
        emit Refunded(taskId, t.client, amount);
    }

    /// Once every slot is settled, the unused spot-check fees go back to the client.
    function _settle(uint256 taskId) internal {
        Task storage t = _tasks[taskId];
        t.settled += 1;
        if (t.settled == t.p.replicas) {
            _refund(taskId, uint256(t.p.spotChecks - t.spotPaid) * t.p.verifierFee);
        }
    }
}

interface IStakingView {
    function accountOf(address account) external view returns (uint256, uint256, uint256, uint256);
}

interface IGameView {
    function partiesOf(uint256 disputeId) external view returns (address defender, address challenger);
}
