// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice TEST ONLY. An account that acts through `exec` and, when tokens arrive, tries
/// once to re-enter a target with a prepared call. It records whether the re-entry succeeded.
contract ReentrantReceiver {
    address public target;
    bytes public reentryData;
    uint256 public attempts;
    uint256 public successes;
    bytes public lastError;

    error ExecFailed(bytes reason);

    function exec(address to, bytes calldata data) external returns (bytes memory) {
        (bool ok, bytes memory ret) = to.call(data);
        if (!ok) revert ExecFailed(ret);
        return ret;
    }

    function arm(address target_, bytes calldata data) external {
        target = target_;
        reentryData = data;
    }

    function onTokenTransfer(address, uint256) external {
        if (target == address(0) || attempts > 0) return;
        attempts += 1;
        (bool ok, bytes memory ret) = target.call(reentryData);
        if (ok) successes += 1;
        else lastError = ret;
    }
}
