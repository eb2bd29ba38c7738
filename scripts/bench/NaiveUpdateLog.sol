// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

interface IMembership {
    function isMember(address account) external view returns (bool);
}

/// @title NaiveUpdateLog
/// @notice Benchmark baseline only, never deployed by the project: the obvious design in which
/// every participant sends its own model-update record to the chain, one transaction per update.
contract NaiveUpdateLog {
    struct UpdateRecord {
        bytes32 updateDigest;
        bytes32 baseModelDigest;
        bytes32 metricsDigest;
        uint64 numExamples;
    }

    IMembership public immutable registry;
    mapping(uint256 jobId => mapping(uint32 round => mapping(address participant => UpdateRecord))) public records;

    /// @notice A participant submitted its update record for a round.
    event UpdateSubmitted(uint256 indexed jobId, uint32 indexed round, address indexed participant);

    /// @notice `account` is not an active member.
    error NotMember(address account);

    constructor(IMembership registry_) {
        registry = registry_;
    }

    /// @notice Stores the caller's update record for round `round` of job `jobId`.
    function submitUpdate(
        uint256 jobId,
        uint32 round,
        bytes32 updateDigest,
        bytes32 baseModelDigest,
        bytes32 metricsDigest,
        uint64 numExamples
    ) external {
        if (!registry.isMember(msg.sender)) revert NotMember(msg.sender);
        records[jobId][round][msg.sender] = UpdateRecord(updateDigest, baseModelDigest, metricsDigest, numExamples);
        emit UpdateSubmitted(jobId, round, msg.sender);
    }
}
