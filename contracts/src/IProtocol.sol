// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice The burnable token the protocol holds (AIToken, or a test double).
interface IBurnableToken {
    function burn(uint256 amount) external;
}

/// @notice How a dispute ended, as the market needs to know it.
enum Outcome {
    None,
    DefenderWon,
    ChallengerWon,
    BothLost, // neither party moved before a deadline: a timeout loses, for both
    NoContest // no referee could be drawn in time: nobody is slashed, the result stands
}

interface IStaking {
    function lock(address account, uint256 amount) external;
    function unlock(address account, uint256 amount) external;
    function slash(address account, uint256 amount, address beneficiary, uint256 reward) external;
    function drawReferee(uint256 seed, address[5] calldata exclude) external returns (address);
    function refereeBond() external view returns (uint256);
    function unbondingDelay() external view returns (uint256);
}

interface IDisputeGame {
    struct OpenArgs {
        uint256 taskId;
        uint256 slot;
        address client;
        address defender;
        address challenger;
        uint256 bond;
        bytes32 rootD;
        bytes32 rootC;
        bytes32 finalD;
        bytes32 finalC;
        bytes32 initialRoot;
        uint64 leaves;
        uint64 steps;
        uint64 commitInterval;
    }

    function open(OpenArgs calldata a) external returns (uint256 disputeId);
    function maxDisputeDuration() external view returns (uint256);
}

interface ITaskMarket {
    function onDisputeResolved(uint256 taskId, uint256 slot, uint256 disputeId, Outcome outcome) external;
}
