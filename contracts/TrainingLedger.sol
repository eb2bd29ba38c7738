// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ConsentRegistry} from "./ConsentRegistry.sol";
import {ConsortiumRegistry} from "./ConsortiumRegistry.sol";

/// @title TrainingLedger
/// @notice Federated-learning jobs, the anchor of every training round (the RFC 6962 Merkle
/// root over the participants' signed update records and the digest of the resulting model),
/// and every use of a job's model: who scored how many subjects, committing to query and result.
/// @dev Gas stays flat in the number of participants. Each round stores one 32-byte commitment
/// over its anchor fields (see `computeRoundCommitment`); the fields themselves are emitted in
/// `RoundAnchored`, whose block can be found without scanning: every job keeps the block of its
/// latest anchor and every anchor event names the block of the previous one.
/// Membership and consent are re-checked in full only when something could have invalidated them
/// since the last check: the registries' epochs moved or the cached consent window ran out.
/// A round names its participants; the check covers those, and a round of some of the
/// participants the last check covered needs none of its own. A model use needs every participant
/// of the job in good standing: the head model descends from every round, so it cannot be used
/// once a consent any of them was trained under is gone. Uses name the job's head model: a
/// per-round index of anchored models would cost every anchor a fresh storage slot (22,306 gas
/// measured by scripts/bench/gas.py, taking the steady-state anchor from 77,241 to 99,547, past
/// the 80,000 it is held to), while the head model is already stored.
/// This contract is also the EIP-712 verifying contract of update records (domain
/// "ConsortiumLedger", version "1"); signatures are checked off chain by the coordinator and the
/// auditor, the chain holds their Merkle root.
contract TrainingLedger {
    enum JobStatus {
        None,
        Open,
        Closed
    }

    /// @dev Everything `anchorRound` needs on its fast path lives in slots 0, 1 and 3. The
    /// model-use counter shares slot 1 with the cached check every use reads anyway, so counting
    /// a use never takes a fresh slot.
    struct Job {
        // slot 0
        address coordinator;
        uint32 lastRound;
        JobStatus status;
        uint56 lastAnchorBlock;
        // slot 1
        uint32 checkedMembershipEpoch;
        uint32 checkedConsentEpoch;
        uint64 windowStart;
        uint64 windowEnd;
        uint64 modelUseCount;
        // slot 2
        bytes32 headModelDigest;
        // slot 3: the participants the last full check covered (bit i: participants[i])
        uint256 checkedParticipants;
        // cold data
        address consumer;
        uint64 createdAt;
        uint64 createdBlock;
        bytes32 purpose;
        bytes32 modelSpecDigest;
        bytes32 initialModelDigest;
        address[] participants;
        uint256[] datasetIds;
    }

    /// @notice The fields of one round's anchor, as committed to by `computeRoundCommitment`.
    struct RoundAnchor {
        uint256 jobId;
        uint32 round;
        bytes32 merkleRoot;
        uint32 participantCount;
        uint256 participantMask;
        bytes32 modelDigest;
        bytes32 metricsDigest;
        bytes32 previousModelDigest;
        uint256 blockNumber;
        uint256 timestamp;
    }

    /// @notice The most participants a job may have: a round names its own by a 256-bit mask.
    uint256 public constant MAX_PARTICIPANTS = 256;
    /// @notice The membership registry.
    ConsortiumRegistry public immutable registry;
    /// @notice The dataset and consent registry.
    ConsentRegistry public immutable consents;
    /// @notice Number of jobs ever created; job ids are 1..jobCount.
    uint256 public jobCount;

    mapping(uint256 jobId => Job) private _jobs;
    mapping(uint256 jobId => mapping(uint32 round => bytes32 commitment)) private _rounds;

    /// @notice Coordinator `coordinator` created job `jobId`.
    event JobCreated(
        uint256 indexed jobId,
        address indexed coordinator,
        address indexed consumer,
        bytes32 purpose,
        bytes32 modelSpecDigest,
        bytes32 initialModelDigest,
        address[] participants,
        uint256[] datasetIds
    );
    /// @notice Round `round` of job `jobId` was anchored.
    event RoundAnchored(
        uint256 indexed jobId,
        uint32 indexed round,
        bytes32 merkleRoot,
        uint32 participantCount,
        uint256 participantMask,
        bytes32 modelDigest,
        bytes32 metricsDigest,
        bytes32 previousModelDigest,
        uint256 previousAnchorBlock,
        bytes32 commitment
    );
    /// @notice Membership and consents of job `jobId` were re-checked in full for the participants
    /// of `participantMask` (bit i: the job's participant i) and found valid.
    event JobRevalidated(
        uint256 indexed jobId,
        uint256 participantMask,
        uint32 membershipEpoch,
        uint32 consentEpoch,
        uint64 windowStart,
        uint64 windowEnd
    );
    /// @notice `caller` used model `modelDigest` of job `jobId` for the `useIndex`-th time on the
    /// job, as `useKind` ("score": one applicant, "referral": a batch), on `subjects` data
    /// subjects; `queryCommitment` and `resultCommitment` commit to the query and its result.
    event ModelUsed(
        uint256 indexed jobId,
        uint256 indexed useIndex,
        address indexed caller,
        bytes32 modelDigest,
        bytes32 useKind,
        bytes32 queryCommitment,
        bytes32 resultCommitment,
        uint32 subjects
    );
    /// @notice Job `jobId` was closed after `lastRound` rounds with final model `modelDigest`.
    event JobClosed(uint256 indexed jobId, uint32 lastRound, bytes32 modelDigest);

    /// @notice `account` is not an active member with the COORDINATOR role.
    error NotCoordinator(address account);
    /// @notice Consumer `account` is not an active member with the CONSUMER role.
    error NotConsumer(address account);
    /// @notice Job `jobId` does not exist.
    error UnknownJob(uint256 jobId);
    /// @notice Job `jobId` is closed.
    error JobNotOpen(uint256 jobId);
    /// @notice `account` is not the coordinator of job `jobId`.
    error NotJobCoordinator(uint256 jobId, address account);
    /// @notice Participant `participant` is not an active member.
    error ParticipantNotMember(address participant);
    /// @notice Participants must be non-empty, at most `MAX_PARTICIPANTS`, and sorted strictly ascending; entry
    /// `index` is not.
    error InvalidParticipants(uint256 index);
    /// @notice A job needs at least one dataset and at most 1000.
    error InvalidDatasets();
    /// @notice Purpose must not be empty.
    error EmptyPurpose();
    /// @notice Dataset `datasetId` has no valid consent for grantee `grantee` and purpose `purpose`.
    error ConsentNotValid(uint256 datasetId, address grantee, bytes32 purpose);
    /// @notice Job `jobId` expects round `expected`, not `round`.
    error WrongRound(uint256 jobId, uint32 expected, uint32 round);
    /// @notice Participant mask `mask` names no participant, or one beyond the job's `participants`.
    error InvalidParticipantMask(uint256 mask, uint256 participants);
    /// @notice Merkle root and model digest must not be zero.
    error EmptyDigest();
    /// @notice Round `round` of job `jobId` has not been anchored.
    error UnknownRound(uint256 jobId, uint32 round);
    /// @notice `account` is neither the consumer nor the coordinator of job `jobId`.
    error NotJobParty(uint256 jobId, address account);
    /// @notice Job `jobId` has no anchored round, so no model of it can be used yet.
    error NoAnchoredRound(uint256 jobId);
    /// @notice Model `modelDigest` is not `headModelDigest`, the model of job `jobId`'s latest anchored round.
    error NotHeadModel(uint256 jobId, bytes32 modelDigest, bytes32 headModelDigest);
    /// @notice A model use needs a non-empty kind.
    error EmptyUseKind();
    /// @notice Query and result commitments must not be zero.
    error EmptyCommitment();
    /// @notice A model use covers at least one subject.
    error NoSubjects();
    /// @notice The consent registry `consents` is bound to another membership registry.
    error RegistryMismatch(address consents);

    /// @param registry_ The deployed membership registry.
    /// @param consents_ The deployed consent registry (bound to the same membership registry).
    constructor(ConsortiumRegistry registry_, ConsentRegistry consents_) {
        if (consents_.registry() != registry_) revert RegistryMismatch(address(consents_));
        registry = registry_;
        consents = consents_;
    }

    // ----------------------------------------------------------------- jobs

    /// @notice Creates a training job; the caller becomes its coordinator and needs the COORDINATOR role.
    /// @param purpose The purpose every dataset's consent must name.
    /// @param modelSpecDigest SHA-256 of the canonical model specification.
    /// @param initialModelDigest Digest of the round-0 model every round-1 update starts from.
    /// @param consumer The member the model is trained for (CONSUMER role); the consents' grantee.
    /// @param participants The members that train, sorted ascending by address.
    /// @param datasetIds The datasets used; each needs consent to `consumer` for `purpose` unless
    /// `consumer` owns it.
    /// @return jobId The new job's id.
    function createJob(
        bytes32 purpose,
        bytes32 modelSpecDigest,
        bytes32 initialModelDigest,
        address consumer,
        address[] calldata participants,
        uint256[] calldata datasetIds
    ) external returns (uint256 jobId) {
        if (purpose == bytes32(0)) revert EmptyPurpose();
        if (initialModelDigest == bytes32(0)) revert EmptyDigest();
        if (participants.length == 0 || participants.length > MAX_PARTICIPANTS) revert InvalidParticipants(0);
        for (uint256 i = 1; i < participants.length; ++i) {
            if (participants[i] <= participants[i - 1]) revert InvalidParticipants(i);
        }
        if (datasetIds.length == 0 || datasetIds.length > 1000) revert InvalidDatasets();
        if (!registry.hasRole(consumer, registry.CONSUMER())) revert NotConsumer(consumer);

        jobId = ++jobCount;
        Job storage job = _jobs[jobId];
        job.coordinator = msg.sender;
        job.status = JobStatus.Open;
        job.headModelDigest = initialModelDigest;
        job.consumer = consumer;
        job.createdAt = uint64(block.timestamp);
        job.createdBlock = uint64(block.number);
        job.purpose = purpose;
        job.modelSpecDigest = modelSpecDigest;
        job.initialModelDigest = initialModelDigest;
        job.participants = participants;
        job.datasetIds = datasetIds;
        emit JobCreated(
            jobId, msg.sender, consumer, purpose, modelSpecDigest, initialModelDigest, participants, datasetIds
        );
        _revalidate(jobId, job, _all(participants.length));
    }

    /// @notice Anchors round `round` of job `jobId`, in which the participants of
    /// `participantMask` took part. Reverts unless the caller is the job's coordinator, `round`
    /// follows the last anchored round, each of those participants is still an active member and
    /// the consent of every dataset they own (the consumer's own aside) is valid now. The other
    /// participants may have left, or lost a consent: the job goes on without them.
    /// @param merkleRoot RFC 6962 root over the round's signed update records.
    /// @param participantMask The round's participants: bit i set for the job's participant i
    /// (in `getJob`'s order); as many records as bits are under `merkleRoot`.
    /// @param modelDigest Digest of the aggregated model this round produced.
    /// @param metricsDigest Digest of the round's metrics artifact.
    /// @return commitment The stored commitment of this round.
    function anchorRound(
        uint256 jobId,
        uint32 round,
        bytes32 merkleRoot,
        uint256 participantMask,
        bytes32 modelDigest,
        bytes32 metricsDigest
    ) external returns (bytes32 commitment) {
        Job storage job = _jobs[jobId];
        if (job.status != JobStatus.Open) {
            if (job.status == JobStatus.None) revert UnknownJob(jobId);
            revert JobNotOpen(jobId);
        }
        if (msg.sender != job.coordinator) revert NotJobCoordinator(jobId, msg.sender);
        if (round != job.lastRound + 1) revert WrongRound(jobId, job.lastRound + 1, round);
        if (merkleRoot == bytes32(0) || modelDigest == bytes32(0)) revert EmptyDigest();
        // A mask the fast path lets through lies within the last check's, which lay within the job.
        if (participantMask == 0) revert InvalidParticipantMask(0, job.participants.length);
        if (!_checkStillHolds(job, participantMask)) _revalidate(jobId, job, participantMask);

        bytes32 previousModelDigest = job.headModelDigest;
        uint256 previousAnchorBlock = job.lastAnchorBlock;
        uint32 participantCount = countParticipants(participantMask);
        commitment = computeRoundCommitment(
            RoundAnchor({
                jobId: jobId,
                round: round,
                merkleRoot: merkleRoot,
                participantCount: participantCount,
                participantMask: participantMask,
                modelDigest: modelDigest,
                metricsDigest: metricsDigest,
                previousModelDigest: previousModelDigest,
                blockNumber: block.number,
                timestamp: block.timestamp
            })
        );
        _rounds[jobId][round] = commitment;
        job.lastRound = round;
        job.lastAnchorBlock = uint56(block.number);
        job.headModelDigest = modelDigest;
        emit RoundAnchored(
            jobId,
            round,
            merkleRoot,
            participantCount,
            participantMask,
            modelDigest,
            metricsDigest,
            previousModelDigest,
            previousAnchorBlock,
            commitment
        );
    }

    /// @notice Closes job `jobId`; no further round can be anchored.
    function closeJob(uint256 jobId) external {
        Job storage job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
        if (job.status != JobStatus.Open) revert JobNotOpen(jobId);
        if (msg.sender != job.coordinator) revert NotJobCoordinator(jobId, msg.sender);
        job.status = JobStatus.Closed;
        emit JobClosed(jobId, job.lastRound, job.headModelDigest);
    }

    // ----------------------------------------------------------------- model uses

    /// @notice Records one use of job `jobId`'s model by its consumer or coordinator and gives it
    /// the job's next use index. Reverts unless the job has an anchored round, `modelDigest` is
    /// the model of its latest one, and the job's membership and consents still hold (as for an
    /// anchor: a revoked or expired consent refuses the use). A closed job's final model can
    /// still be used.
    /// @param modelDigest Digest of the model used: the job's head model.
    /// @param useKind The kind of use as short text, encoded like a purpose ("score", "referral").
    /// @param queryCommitment Commitment to the query (the subjects and their features).
    /// @param resultCommitment Commitment to the result (the scores or the referral list).
    /// @param subjects Number of data subjects the use scored.
    /// @return useIndex The use's index within the job, counting from 1.
    function recordModelUse(
        uint256 jobId,
        bytes32 modelDigest,
        bytes32 useKind,
        bytes32 queryCommitment,
        bytes32 resultCommitment,
        uint32 subjects
    ) external returns (uint256 useIndex) {
        Job storage job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
        if (msg.sender != job.coordinator && msg.sender != job.consumer) revert NotJobParty(jobId, msg.sender);
        if (job.lastRound == 0) revert NoAnchoredRound(jobId);
        if (modelDigest != job.headModelDigest) revert NotHeadModel(jobId, modelDigest, job.headModelDigest);
        if (useKind == bytes32(0)) revert EmptyUseKind();
        if (queryCommitment == bytes32(0) || resultCommitment == bytes32(0)) revert EmptyCommitment();
        if (subjects == 0) revert NoSubjects();
        uint256 everyone = _all(job.participants.length); // the model descends from every round
        if (!_checkStillHolds(job, everyone)) _revalidate(jobId, job, everyone);

        useIndex = ++job.modelUseCount;
        emit ModelUsed(jobId, useIndex, msg.sender, modelDigest, useKind, queryCommitment, resultCommitment, subjects);
    }

    // ----------------------------------------------------------------- views

    /// @notice Job `jobId`, including its participants, datasets and latest anchor.
    function getJob(uint256 jobId) external view returns (Job memory) {
        if (_jobs[jobId].status == JobStatus.None) revert UnknownJob(jobId);
        return _jobs[jobId];
    }

    /// @notice Where job `jobId` stands before its next round, in one call: its status, latest
    /// round and head model, the participants its last full check of membership and consent
    /// covered, and whether that check still holds (no membership or consent change anywhere
    /// since, and now inside the consents' common window), in which case the next anchor by the
    /// same participants skips it.
    function jobProgress(uint256 jobId)
        external
        view
        returns (
            JobStatus status,
            uint32 lastRound,
            bytes32 headModelDigest,
            uint256 checkedParticipants,
            bool checkStillHolds
        )
    {
        Job storage job = _jobs[jobId];
        if (job.status == JobStatus.None) revert UnknownJob(jobId);
        uint256 mask = job.checkedParticipants;
        return (job.status, job.lastRound, job.headModelDigest, mask, _checkStillHolds(job, mask));
    }

    /// @notice Number of model uses recorded for job `jobId`; use indices run from 1 to it.
    function modelUseCount(uint256 jobId) external view returns (uint256) {
        if (_jobs[jobId].status == JobStatus.None) revert UnknownJob(jobId);
        return _jobs[jobId].modelUseCount;
    }

    /// @notice The stored commitment of round `round` of job `jobId`.
    function roundCommitment(uint256 jobId, uint32 round) external view returns (bytes32 commitment) {
        commitment = _rounds[jobId][round];
        if (commitment == bytes32(0)) revert UnknownRound(jobId, round);
    }

    /// @notice Whether `anchor` is exactly what was anchored for its job and round.
    function verifyRound(RoundAnchor calldata anchor) external view returns (bool) {
        bytes32 stored = _rounds[anchor.jobId][anchor.round];
        return stored != bytes32(0) && stored == computeRoundCommitment(anchor);
    }

    /// @notice The commitment of a round's anchor fields: keccak256 of their ABI encoding in
    /// declaration order.
    function computeRoundCommitment(RoundAnchor memory anchor) public pure returns (bytes32) {
        return keccak256(abi.encode(anchor));
    }

    /// @notice How many participants the participant mask `mask` names: its bits set, counted in
    /// parallel (constant gas whatever the job's size), as in Hacker's Delight 5-1.
    function countParticipants(uint256 mask) public pure returns (uint32) {
        if (mask == type(uint256).max) return 256; // the byte sum below would wrap to 0
        unchecked {
            uint256 m1 = 0x5555555555555555555555555555555555555555555555555555555555555555;
            uint256 m2 = 0x3333333333333333333333333333333333333333333333333333333333333333;
            uint256 m4 = 0x0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f;
            uint256 h01 = 0x0101010101010101010101010101010101010101010101010101010101010101;
            mask -= (mask >> 1) & m1;
            mask = (mask & m2) + ((mask >> 2) & m2);
            mask = (mask + (mask >> 4)) & m4;
            return uint32((mask * h01) >> 248);
        }
    }

    // ----------------------------------------------------------------- internals

    /// @dev Whether the job's last full check still holds for the participants of `mask`: it
    /// covered each of them (and with them every dataset they own), and nothing it read can have
    /// changed. A round some participant sat out, with nothing changed, so needs no check.
    function _checkStillHolds(Job storage job, uint256 mask) private view returns (bool) {
        return mask & ~job.checkedParticipants == 0 && job.checkedMembershipEpoch == registry.membershipEpoch()
            && job.checkedConsentEpoch == consents.consentEpoch() && block.timestamp >= job.windowStart
            && block.timestamp <= job.windowEnd;
    }

    /// @dev Full check of everything the participants of `mask` depend on: the coordinator and
    /// the consumer hold their roles, each of them is an active member, and the consent of every
    /// dataset one of them owns is valid (the consumer's own datasets need none); caches the
    /// mask, the epochs and the consent window so that later anchors can skip it while nothing
    /// changes.
    function _revalidate(uint256 jobId, Job storage job, uint256 mask) private {
        if (!registry.hasRole(job.coordinator, registry.COORDINATOR())) revert NotCoordinator(job.coordinator);
        address[] storage participants = job.participants;
        if (mask == 0 || mask >> participants.length != 0) revert InvalidParticipantMask(mask, participants.length);
        uint256 all = _all(participants.length);
        for (uint256 i = 0; i < participants.length; ++i) {
            if (mask & (uint256(1) << i) != 0 && !registry.isMember(participants[i])) {
                revert ParticipantNotMember(participants[i]);
            }
        }
        if (!registry.hasRole(job.consumer, registry.CONSUMER())) revert NotConsumer(job.consumer);

        uint64 windowStart = 0;
        uint64 windowEnd = type(uint64).max;
        uint256[] storage datasetIds = job.datasetIds;
        for (uint256 i = 0; i < datasetIds.length; ++i) {
            uint256 datasetId = datasetIds[i];
            address owner = consents.getDataset(datasetId).owner;
            if (owner == job.consumer || (mask != all && _leftOut(participants, mask, owner))) continue;
            if (!consents.isConsentValid(datasetId, job.consumer, job.purpose)) {
                revert ConsentNotValid(datasetId, job.consumer, job.purpose);
            }
            ConsentRegistry.Consent memory c = consents.getConsent(datasetId, job.consumer, job.purpose);
            if (c.validFrom > windowStart) windowStart = c.validFrom;
            if (c.validUntil < windowEnd) windowEnd = c.validUntil;
        }
        uint32 membershipEpoch = registry.membershipEpoch();
        uint32 consentEpoch = consents.consentEpoch();
        job.checkedParticipants = mask;
        job.checkedMembershipEpoch = membershipEpoch;
        job.checkedConsentEpoch = consentEpoch;
        job.windowStart = windowStart;
        job.windowEnd = windowEnd;
        emit JobRevalidated(jobId, mask, membershipEpoch, consentEpoch, windowStart, windowEnd);
    }

    /// @dev Whether `account` is a participant of the job whom `mask` leaves out: the round uses
    /// none of its data. An owner who is no participant at all is not left out.
    function _leftOut(address[] storage participants, uint256 mask, address account) private view returns (bool) {
        for (uint256 i = 0; i < participants.length; ++i) {
            if (participants[i] == account) return mask & (uint256(1) << i) == 0;
        }
        return false;
    }

    /// @dev The mask of all of a job's `count` participants.
    function _all(uint256 count) private pure returns (uint256) {
        return type(uint256).max >> (256 - count);
    }
}
