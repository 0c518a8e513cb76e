// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice One `governance` address owns every protocol parameter. A later issue
/// hands it to a Governor with a Timelock; until then it is an account.
abstract contract Governed {
    address public governance;

    error NotGovernance(address caller);
    error ZeroAddress();
    error ParameterOutOfRange(bytes32 name, uint256 value);

    event GovernanceTransferred(address indexed previous, address indexed next);
    event ParameterSet(bytes32 indexed name, uint256 value);

    constructor(address governance_) {
        if (governance_ == address(0)) revert ZeroAddress();
        governance = governance_;
        emit GovernanceTransferred(address(0), governance_);
    }

    modifier onlyGovernance() {
        if (msg.sender != governance) revert NotGovernance(msg.sender);
        _;
    }

    /// @notice Hand the parameters to another address (a Timelock, later).
    function transferGovernance(address next) external onlyGovernance {
        if (next == address(0)) revert ZeroAddress();
        emit GovernanceTransferred(governance, next);
        governance = next;
    }
}
