// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Burnable} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Burnable.sol";
import {Governed} from "./Governed.sol";

/// @notice The network's token, "AI". Burnable: protocol fees and slashed bonds
/// are burned. It counts everything ever minted and burned, so the conservation
/// law minted = balances + escrow + stakes + credits + burned can be checked on
/// chain (DESIGN.md, "What must never happen").
contract AIToken is ERC20, ERC20Burnable, Governed {
    uint256 public totalMinted;
    uint256 public totalBurned;

    constructor(address governance_) ERC20("AI", "AI") Governed(governance_) {}

    /// @notice Governance mints (the devnet funds its test accounts this way).
    function mint(address to, uint256 amount) external onlyGovernance {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (from == address(0)) totalMinted += value;
        if (to == address(0)) totalBurned += value;
    }
}
