// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {ConsortiumRegistry} from "./ConsortiumRegistry.sol";

/// @title ConsentRegistry
/// @notice Datasets and data-usage consents: which provider allows which grantee to use which
/// dataset for which purpose, and during which window.
/// @dev The data never comes here: a dataset is a name, the digest of its schema and, optionally,
/// the Merkle root of its consented data subjects, versioned. A grant can be sent by the dataset
/// owner or relayed by anyone holding the owner's EIP-712 signature (nonce + deadline), so that a
/// provider's key can stay offline. Each consent (dataset x grantee x purpose) has its own nonce,
/// `grantNonce`, which every change of that consent increases (a grant, direct or relayed, a
/// revocation) and which the owner can increase alone with `cancelSignedGrants`; a signed grant
/// must carry the current value, so a grant signed before any later change of its consent, or
/// before a cancellation, can never be relayed. `consentEpoch` increases whenever a consent may
/// have become invalid before its window ends (revocation, new grant replacing an old one), so
/// that other contracts can cache a positive answer.
contract ConsentRegistry is EIP712 {
    struct Dataset {
        address owner;
        uint64 registeredAt;
        uint32 subjectsVersion;
        bytes32 schemaDigest;
        bytes32 subjectsRoot;
        string name;
    }

    struct Consent {
        address grantee;
        bytes32 purpose;
        uint64 validFrom;
        uint64 validUntil;
        uint64 grantedAt;
        bool revoked;
    }

    /// @notice EIP-712 type of a consent grant signed by a dataset owner; `nonce` is the consent's
    /// `grantNonce` at signing.
    bytes32 public constant GRANT_TYPEHASH = keccak256(
        "ConsentGrant(uint256 datasetId,address grantee,bytes32 purpose,uint64 validFrom,uint64 validUntil,uint256 nonce,uint256 deadline)"
    );

    /// @notice The membership registry consulted for the PROVIDER role.
    ConsortiumRegistry public immutable registry;
    /// @notice Number of registered datasets; dataset ids are 1..datasetCount.
    uint256 public datasetCount;
    /// @notice Increases whenever an existing consent is revoked or replaced.
    uint32 public consentEpoch;

    mapping(uint256 id => Dataset) private _datasets;
    mapping(uint256 id => mapping(uint32 version => bytes32 root)) private _subjectsRoots;
    mapping(bytes32 key => Consent) private _consents;
    mapping(uint256 id => bytes32[] keys) private _consentKeys;
    mapping(bytes32 key => uint256 nonce) private _grantNonces;

    /// @notice Provider `owner` registered dataset `datasetId`.
    event DatasetRegistered(
        uint256 indexed datasetId, address indexed owner, string name, bytes32 schemaDigest, bytes32 subjectsRoot
    );
    /// @notice The consented data subjects of dataset `datasetId` changed to `subjectsRoot`.
    event SubjectsRootUpdated(uint256 indexed datasetId, uint32 version, bytes32 subjectsRoot);
    /// @notice Consent granted (or replaced) for dataset x grantee x purpose.
    event ConsentGranted(
        uint256 indexed datasetId, address indexed grantee, bytes32 indexed purpose, uint64 validFrom, uint64 validUntil
    );
    /// @notice Consent revoked for dataset x grantee x purpose.
    event ConsentRevoked(uint256 indexed datasetId, address indexed grantee, bytes32 indexed purpose);
    /// @notice Every signed grant of dataset x grantee x purpose not yet relayed is void; the next one
    /// must carry `nonce`. The consent itself is unchanged.
    event SignedGrantsCancelled(
        uint256 indexed datasetId, address indexed grantee, bytes32 indexed purpose, uint256 nonce
    );

    /// @notice `account` is not an active member with the PROVIDER role.
    error NotProvider(address account);
    /// @notice Dataset `datasetId` does not exist.
    error UnknownDataset(uint256 datasetId);
    /// @notice `account` does not own dataset `datasetId`.
    error NotDatasetOwner(uint256 datasetId, address account);
    /// @notice Dataset name must be 1 to 64 bytes long.
    error InvalidDatasetName();
    /// @notice Grantee `grantee` is not an active member.
    error GranteeNotMember(address grantee);
    /// @notice Purpose must not be empty.
    error EmptyPurpose();
    /// @notice Validity window from `validFrom` until `validUntil` is empty or already over.
    error InvalidWindow(uint64 validFrom, uint64 validUntil);
    /// @notice No consent exists for dataset `datasetId`, grantee `grantee` and purpose `purpose`.
    error NoConsent(uint256 datasetId, address grantee, bytes32 purpose);
    /// @notice The consent for dataset `datasetId`, grantee `grantee` and purpose `purpose` is already revoked.
    error AlreadyRevoked(uint256 datasetId, address grantee, bytes32 purpose);
    /// @notice The signed grant expired at `deadline`.
    error SignatureExpired(uint256 deadline);
    /// @notice The grant was signed by `signer`, not by the dataset owner `owner`.
    error WrongSigner(address signer, address owner);
    /// @notice The signed grant carries nonce `nonce`, not its consent's current nonce `currentNonce`:
    /// the consent changed, or its signed grants were cancelled, after it was signed.
    error InvalidGrantNonce(uint256 currentNonce, uint256 nonce);

    /// @param registry_ The deployed membership registry.
    constructor(ConsortiumRegistry registry_) EIP712("ConsortiumLedger", "1") {
        registry = registry_;
    }

    // ----------------------------------------------------------------- datasets

    /// @notice Registers a dataset owned by the caller, who must be an active PROVIDER.
    /// @param name Human-readable name, 1 to 64 bytes.
    /// @param schemaDigest SHA-256 of the dataset's canonical schema.
    /// @param subjectsRoot Merkle root of consented data subjects, or zero when not tracked.
    /// @return datasetId The new dataset's id.
    function registerDataset(string calldata name, bytes32 schemaDigest, bytes32 subjectsRoot)
        external
        returns (uint256 datasetId)
    {
        _checkProvider(msg.sender);
        if (bytes(name).length == 0 || bytes(name).length > 64) revert InvalidDatasetName();
        datasetId = ++datasetCount;
        _datasets[datasetId] = Dataset({
            owner: msg.sender,
            registeredAt: uint64(block.timestamp),
            subjectsVersion: 1,
            schemaDigest: schemaDigest,
            subjectsRoot: subjectsRoot,
            name: name
        });
        _subjectsRoots[datasetId][1] = subjectsRoot;
        emit DatasetRegistered(datasetId, msg.sender, name, schemaDigest, subjectsRoot);
    }

    /// @notice Publishes a new version of the consented-subjects root of dataset `datasetId`.
    /// @return version The new version number.
    function updateSubjectsRoot(uint256 datasetId, bytes32 subjectsRoot) external returns (uint32 version) {
        Dataset storage d = _ownedDataset(datasetId, msg.sender);
        version = ++d.subjectsVersion;
        d.subjectsRoot = subjectsRoot;
        _subjectsRoots[datasetId][version] = subjectsRoot;
        emit SubjectsRootUpdated(datasetId, version, subjectsRoot);
    }

    // ----------------------------------------------------------------- consents

    /// @notice Grants (or replaces) consent for `grantee` to use dataset `datasetId` for `purpose`
    /// from `validFrom` until `validUntil` (unix seconds, inclusive).
    function grantConsent(uint256 datasetId, address grantee, bytes32 purpose, uint64 validFrom, uint64 validUntil)
        external
    {
        _ownedDataset(datasetId, msg.sender);
        _grant(datasetId, grantee, purpose, validFrom, validUntil);
    }

    /// @notice Relays a consent grant signed offline by the dataset owner (EIP-712 `ConsentGrant`).
    /// @dev The grant must be the owner's answer to the consent as it is now: once the consent has
    /// changed in any way since signing, or the owner cancelled its signed grants, it is refused.
    /// @param nonce Must equal the consent's current nonce, `grantNonce(datasetId, grantee, purpose)`.
    /// @param deadline Last unix second at which the signature may be used.
    /// @param signature 65-byte ECDSA signature over the typed data.
    function grantConsentBySig(
        uint256 datasetId,
        address grantee,
        bytes32 purpose,
        uint64 validFrom,
        uint64 validUntil,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external {
        if (block.timestamp > deadline) revert SignatureExpired(deadline);
        address owner = _dataset(datasetId).owner;
        bytes32 structHash =
            keccak256(abi.encode(GRANT_TYPEHASH, datasetId, grantee, purpose, validFrom, validUntil, nonce, deadline));
        address signer = ECDSA.recover(_hashTypedDataV4(structHash), signature);
        if (signer != owner) revert WrongSigner(signer, owner);
        uint256 current = _grantNonces[consentKey(datasetId, grantee, purpose)];
        if (nonce != current) revert InvalidGrantNonce(current, nonce);
        _ownedDataset(datasetId, owner);
        _grant(datasetId, grantee, purpose, validFrom, validUntil);
    }

    /// @notice Revokes the consent for dataset `datasetId`, `grantee` and `purpose`; takes effect at once,
    /// and voids every signed grant of this consent made before.
    function revokeConsent(uint256 datasetId, address grantee, bytes32 purpose) external {
        _ownedDataset(datasetId, msg.sender);
        bytes32 key = consentKey(datasetId, grantee, purpose);
        Consent storage c = _consents[key];
        if (c.grantedAt == 0) revert NoConsent(datasetId, grantee, purpose);
        if (c.revoked) revert AlreadyRevoked(datasetId, grantee, purpose);
        c.revoked = true;
        ++_grantNonces[key];
        ++consentEpoch;
        emit ConsentRevoked(datasetId, grantee, purpose);
    }

    /// @notice Voids every signed grant of the consent for dataset `datasetId`, `grantee` and `purpose`
    /// that has not been relayed, without changing the consent (granted or not).
    /// @dev Only the dataset's owner may cancel, even while it lacks the PROVIDER role: cancelling
    /// only takes away what its signatures could still do. No validity changes, so `consentEpoch`
    /// stays.
    /// @return nonce The nonce the next signed grant of this consent must carry.
    function cancelSignedGrants(uint256 datasetId, address grantee, bytes32 purpose)
        external
        returns (uint256 nonce)
    {
        Dataset storage d = _dataset(datasetId);
        if (d.owner != msg.sender) revert NotDatasetOwner(datasetId, msg.sender);
        nonce = ++_grantNonces[consentKey(datasetId, grantee, purpose)];
        emit SignedGrantsCancelled(datasetId, grantee, purpose, nonce);
    }

    // ----------------------------------------------------------------- views

    /// @notice Whether `grantee` may use dataset `datasetId` for `purpose` right now: granted, not
    /// revoked, inside the window, and the owner still an active PROVIDER.
    function isConsentValid(uint256 datasetId, address grantee, bytes32 purpose) external view returns (bool) {
        Consent storage c = _consents[consentKey(datasetId, grantee, purpose)];
        return c.grantedAt != 0 && !c.revoked && block.timestamp >= c.validFrom && block.timestamp <= c.validUntil
            && registry.hasRole(_datasets[datasetId].owner, registry.PROVIDER());
    }

    /// @notice Every consent ever granted on dataset `datasetId`, revoked ones included, in the order
    /// first granted.
    function consentsOf(uint256 datasetId) external view returns (Consent[] memory list) {
        _dataset(datasetId);
        bytes32[] storage keys = _consentKeys[datasetId];
        list = new Consent[](keys.length);
        for (uint256 i = 0; i < keys.length; ++i) {
            list[i] = _consents[keys[i]];
        }
    }

    /// @notice The stored consent for dataset x grantee x purpose (all zero when never granted).
    function getConsent(uint256 datasetId, address grantee, bytes32 purpose) external view returns (Consent memory) {
        return _consents[consentKey(datasetId, grantee, purpose)];
    }

    /// @notice The stored consents of each of `datasetIds` for `grantee` and `purpose`, in their
    /// order (all zero where never granted): one call where a reader needs many.
    function getConsents(uint256[] calldata datasetIds, address grantee, bytes32 purpose)
        external
        view
        returns (Consent[] memory list)
    {
        list = new Consent[](datasetIds.length);
        for (uint256 i = 0; i < datasetIds.length; ++i) {
            list[i] = _consents[consentKey(datasetIds[i], grantee, purpose)];
        }
    }

    /// @notice The owner of each of `datasetIds`, in their order; the zero address for an id that
    /// is not registered (where `getDataset` reverts), so that one unknown id spoils no batch.
    function ownersOf(uint256[] calldata datasetIds) external view returns (address[] memory owners) {
        owners = new address[](datasetIds.length);
        for (uint256 i = 0; i < datasetIds.length; ++i) {
            owners[i] = _datasets[datasetIds[i]].owner;
        }
    }

    /// @notice Dataset `datasetId`.
    function getDataset(uint256 datasetId) external view returns (Dataset memory) {
        return _dataset(datasetId);
    }

    /// @notice The consented-subjects root of dataset `datasetId` at `version`.
    function subjectsRootAt(uint256 datasetId, uint32 version) external view returns (bytes32) {
        _dataset(datasetId);
        return _subjectsRoots[datasetId][version];
    }

    /// @notice The EIP-712 domain separator of this deployment.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The nonce the next signed grant of the consent for dataset x grantee x purpose must
    /// carry: the number of changes of that consent (grants, revocations, cancellations) so far.
    function grantNonce(uint256 datasetId, address grantee, bytes32 purpose) external view returns (uint256) {
        return _grantNonces[consentKey(datasetId, grantee, purpose)];
    }

    /// @notice Storage key of a consent.
    function consentKey(uint256 datasetId, address grantee, bytes32 purpose) public pure returns (bytes32) {
        return keccak256(abi.encode(datasetId, grantee, purpose));
    }

    // ----------------------------------------------------------------- internals

    function _grant(uint256 datasetId, address grantee, bytes32 purpose, uint64 validFrom, uint64 validUntil) private {
        if (!registry.isMember(grantee)) revert GranteeNotMember(grantee);
        if (purpose == bytes32(0)) revert EmptyPurpose();
        if (validFrom > validUntil || validUntil < block.timestamp) revert InvalidWindow(validFrom, validUntil);
        bytes32 key = consentKey(datasetId, grantee, purpose);
        Consent storage c = _consents[key];
        if (c.grantedAt == 0) {
            _consentKeys[datasetId].push(key);
            c.grantee = grantee;
            c.purpose = purpose;
        } else {
            ++consentEpoch;
        }
        c.validFrom = validFrom;
        c.validUntil = validUntil;
        c.grantedAt = uint64(block.timestamp);
        c.revoked = false;
        ++_grantNonces[key];
        emit ConsentGranted(datasetId, grantee, purpose, validFrom, validUntil);
    }

    function _checkProvider(address account) private view {
        if (!registry.hasRole(account, registry.PROVIDER())) revert NotProvider(account);
    }

    function _dataset(uint256 datasetId) private view returns (Dataset storage d) {
        d = _datasets[datasetId];
        if (d.owner == address(0)) revert UnknownDataset(datasetId);
    }

    function _ownedDataset(uint256 datasetId, address account) private view returns (Dataset storage d) {
        d = _dataset(datasetId);
        if (d.owner != account) revert NotDatasetOwner(datasetId, account);
        _checkProvider(account);
    }
}
