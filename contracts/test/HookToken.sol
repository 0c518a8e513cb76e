// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

interface ITokenReceiver {
    function onTokenTransfer(address from, uint256 amount) external;
}

/// @notice TEST ONLY. A burnable token that calls back a registered recipient on every
/// transfer to it (ERC-777 style), to drive reentrancy attacks against the protocol.
contract HookToken is ERC20 {
    mapping(address => bool) public hooked;
    uint256 public totalMinted;
    uint256 public totalBurned;

    constructor() ERC20("Hook", "HOOK") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function burn(uint256 amount) external {
        _burn(msg.sender, amount);
    }

    function setHooked(bool on) external {
        hooked[msg.sender] = on;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from == address(0)) totalMinted += value;
        if (to == address(0)) totalBurned += value;
        if (to != address(0) && hooked[to]) ITokenReceiver(to).onTokenTransfer(from, value);
    }
}
