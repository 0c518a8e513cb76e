// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Governed} from "./Governed.sol";
import {IBurnableToken} from "./IProtocol.sol";

/// @notice Stakes of solvers, verifiers and referees (DESIGN.md, "Roles").
///
/// Bonds are locked parts of a stake: the market locks a solver's bond at claim and
/// a challenger's at challenge; the dispute game locks a referee's when it draws it.
/// Only the market and the dispute game may lock, unlock and slash. A locked amount
/// cannot be unstaked, so an unstake never escapes a pending slash; and slashing
/// touches only locked stake, so it never shortens (or lengthens) an exit already
/// under way. Slash rewards are credits, withdrawn by their owner.
contract Staking is Governed, ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Account {
        uint256 staked; // includes `locked`, excludes `unbonding`
        uint256 locked;
        uint256 unbonding;
        uint64 unbondAt;
    }

    IERC20 public immutable token;
    address public market;
    address public game;
    uint256 public unbondingDelay = 14 days;
    uint256 public refereeBond = 100 ether;

    mapping(address => Account) internal _accounts;
    mapping(address => uint256) public credits;
    uint256 public totalStaked;
    uint256 public totalUnbonding;
    uint256 public totalCredits;

    address[] internal _pool;
    mapping(address => uint256) internal _poolIndex; // index + 1; 0 = not in the pool

    error ZeroAmount();
    error AlreadyWired();
    error NotProtocol(address caller);
    error InsufficientFreeStake(address account, uint256 free, uint256 needed);
    error NothingUnbonding(address account);
    error StillUnbonding(address account, uint256 readyAt);
    error NothingToWithdraw(address account);
    error AlreadyReferee(address account);
    error NotReferee(address account);

    event Staked(address indexed account, uint256 amount);
    event UnstakeRequested(address indexed account, uint256 amount, uint256 readyAt);
    event Unstaked(address indexed account, uint256 amount);
    event Locked(address indexed account, uint256 amount);
    event Unlocked(address indexed account, uint256 amount);
    event Slashed(address indexed account, uint256 amount, address indexed beneficiary, uint256 reward, uint256 burned);
    event CreditWithdrawn(address indexed account, uint256 amount);
    event RefereeJoined(address indexed account);
    event RefereeLeft(address indexed account);

    constructor(IERC20 token_, address governance_) Governed(governance_) {
        token = token_;
    }

    modifier onlyProtocol() {
        if (msg.sender != market && msg.sender != game) revert NotProtocol(msg.sender);
        _;
    }

    // ---------------------------------------------------------------- governance

    /// @notice Names the market and the dispute game, once: they alone may slash.
    function wire(address market_, address game_) external onlyGovernance {
        if (market != address(0)) revert AlreadyWired();
        if (market_ == address(0) || game_ == address(0)) revert ZeroAddress();
        market = market_;
        game = game_;
    }

    /// @notice The unbonding delay; the market requires it to cover a challenge window plus the longest dispute.
    function setUnbondingDelay(uint256 delay) external onlyGovernance {
        if (delay < 1 hours || delay > 365 days) revert ParameterOutOfRange("unbondingDelay", delay);
        unbondingDelay = delay;
        emit ParameterSet("unbondingDelay", delay);
    }

    function setRefereeBond(uint256 bond) external onlyGovernance {
        if (bond == 0) revert ParameterOutOfRange("refereeBond", bond);
        refereeBond = bond;
        emit ParameterSet("refereeBond", bond);
    }

    // ---------------------------------------------------------------- stakers

    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        // pull first, so an amount the staker does not hold fails as the token's own error
        token.safeTransferFrom(msg.sender, address(this), amount);
        _accounts[msg.sender].staked += amount;
        totalStaked += amount;
        emit Staked(msg.sender, amount);
    }

    /// @notice Start unbonding `amount` of free (unlocked) stake. Restarts the delay for the whole unbonding amount.
    function requestUnstake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Account storage a = _accounts[msg.sender];
        uint256 free = a.staked - a.locked;
        if (amount > free) revert InsufficientFreeStake(msg.sender, free, amount);
        a.staked -= amount;
        a.unbonding += amount;
        a.unbondAt = uint64(block.timestamp + unbondingDelay);
        totalStaked -= amount;
        totalUnbonding += amount;
        emit UnstakeRequested(msg.sender, amount, a.unbondAt);
    }

    function withdrawUnstaked() external nonReentrant {
        Account storage a = _accounts[msg.sender];
        uint256 amount = a.unbonding;
        if (amount == 0) revert NothingUnbonding(msg.sender);
        if (block.timestamp < a.unbondAt) revert StillUnbonding(msg.sender, a.unbondAt);
        a.unbonding = 0;
        totalUnbonding -= amount;
        emit Unstaked(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    function withdrawCredit() external nonReentrant {
        uint256 amount = credits[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        credits[msg.sender] = 0;
        totalCredits -= amount;
        emit CreditWithdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    function joinRefereePool() external {
        if (_poolIndex[msg.sender] != 0) revert AlreadyReferee(msg.sender);
        Account storage a = _accounts[msg.sender];
        if (a.staked - a.locked < refereeBond) revert InsufficientFreeStake(msg.sender, a.staked - a.locked, refereeBond);
        _pool.push(msg.sender);
        _poolIndex[msg.sender] = _pool.length;
        emit RefereeJoined(msg.sender);
    }

    function leaveRefereePool() external {
        uint256 i = _poolIndex[msg.sender];
        if (i == 0) revert NotReferee(msg.sender);
        address last = _pool[_pool.length - 1];
        _pool[i - 1] = last;
        _poolIndex[last] = i;
        _pool.pop();
        _poolIndex[msg.sender] = 0;
        emit RefereeLeft(msg.sender);
    }

    // ---------------------------------------------------------------- views

    function accountOf(address account)
        external
        view
        returns (uint256 staked, uint256 locked, uint256 unbonding, uint256 unbondAt)
    {
        Account storage a = _accounts[account];
        return (a.staked, a.locked, a.unbonding, a.unbondAt);
    }

    function freeStake(address account) public view returns (uint256) {
        Account storage a = _accounts[account];
        return a.staked - a.locked;
    }

    function refereePool() external view returns (address[] memory) {
        return _pool;
    }

    // ---------------------------------------------------------------- protocol

    function lock(address account, uint256 amount) external onlyProtocol {
        _lock(account, amount);
    }

    function unlock(address account, uint256 amount) external onlyProtocol {
        _accounts[account].locked -= amount;
        emit Unlocked(account, amount);
    }

    /// @notice Take `amount` of `account`'s locked stake: `reward` becomes `beneficiary`'s credit, the rest is burned.
    function slash(address account, uint256 amount, address beneficiary, uint256 reward) external onlyProtocol {
        Account storage a = _accounts[account];
        a.locked -= amount;
        a.staked -= amount;
        totalStaked -= amount;
        if (reward > 0) {
            credits[beneficiary] += reward;
            totalCredits += reward;
        }
        uint256 burned = amount - reward;
        emit Slashed(account, amount, beneficiary, reward, burned);
        if (burned > 0) IBurnableToken(address(token)).burn(burned);
    }

    /// @notice Draw a referee from the pool, never one in `exclude`, and lock its bond; address(0) if none can serve.
    /// @dev The seed comes from block data after the dispute opened: good enough for a devnet;
    /// a VRF replaces it on a public chain.
    function drawReferee(uint256 seed, address[5] calldata exclude) external onlyProtocol returns (address) {
        uint256 len = _pool.length;
        if (len == 0) return address(0);
        uint256 start = seed % len;
        for (uint256 j; j < len; ++j) {
            address c = _pool[(start + j) % len];
            if (_excluded(c, exclude)) continue;
            if (freeStake(c) < refereeBond) continue;
            _lock(c, refereeBond);
            return c;
        }
        return address(0);
    }

    function _excluded(address c, address[5] calldata exclude) internal pure returns (bool) {
        for (uint256 k; k < 5; ++k) {
            if (c == exclude[k]) return true;
        }
        return false;
    }

    function _lock(address account, uint256 amount) internal {
        Account storage a = _accounts[account];
        uint256 free = a.staked - a.locked;
        if (amount > free) revert InsufficientFreeStake(account, free, amount);
        a.locked += amount;
        emit Locked(account, amount);
    }
}
