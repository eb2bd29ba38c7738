// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ConsortiumRegistry
/// @notice Who belongs to the consortium and in which roles. Membership changes only through
/// proposals that the active members vote on; nobody, not even a founder, can change it alone.
/// @dev Roles are a bit set: PROVIDER = 1, CONSUMER = 2, COORDINATOR = 4, AUDITOR = 8.
/// A proposal executes as soon as the approvals of members who are *still active* exceed
/// `quorumBps / 10000` of the currently active members. Votes carry the voter's membership
/// epoch, so a vote cast by a member who was later removed (or removed and re-admitted) stops
/// counting. `membershipEpoch` increases on every change that can take a right away (removal,
/// leaving, role change); other contracts cache it to skip re-checking unchanged membership.
contract ConsortiumRegistry {
    uint8 public constant PROVIDER = 1;
    uint8 public constant CONSUMER = 2;
    uint8 public constant COORDINATOR = 4;
    uint8 public constant AUDITOR = 8;
    uint8 public constant ALL_ROLES = 15;
    uint16 public constant BPS = 10_000;

    enum ProposalKind {
        AddMember,
        RemoveMember,
        ChangeRoles,
        ChangeQuorum
    }

    enum ProposalStatus {
        None,
        Pending,
        Executed
    }

    struct Member {
        string name;
        uint8 roles;
        bool active;
        uint32 epoch;
        uint64 joinedAt;
    }

    struct Proposal {
        ProposalKind kind;
        ProposalStatus status;
        address account;
        uint8 roles;
        uint16 quorumBps;
        uint64 createdAt;
        uint64 expiresAt;
        address proposer;
        string name;
    }

    /// @notice Current quorum in basis points of the active members.
    uint16 public quorumBps;
    /// @notice How long a new proposal stays open, in seconds.
    uint64 public immutable proposalLifetime;
    /// @notice Number of currently active members.
    uint32 public activeMemberCount;
    /// @notice Increases whenever a member loses a right (removal, leaving, role change).
    uint32 public membershipEpoch;
    /// @notice Number of proposals ever created; proposal ids are 1..proposalCount.
    uint256 public proposalCount;

    address[] private _everMembers;
    mapping(address account => Member) private _members;
    mapping(uint256 id => Proposal) private _proposals;
    mapping(uint256 id => address[]) private _voters;
    mapping(uint256 id => mapping(address voter => uint32 epochPlusOne)) private _votes;

    /// @notice A member joined, through deployment or an executed proposal.
    event MemberAdded(address indexed account, string name, uint8 roles);
    /// @notice A member was removed by an executed proposal.
    event MemberRemoved(address indexed account);
    /// @notice A member left of its own accord.
    event MemberLeft(address indexed account);
    /// @notice A member's roles changed through an executed proposal.
    event RolesChanged(address indexed account, uint8 previousRoles, uint8 roles);
    /// @notice The quorum changed through an executed proposal.
    event QuorumChanged(uint16 previousQuorumBps, uint16 quorumBps);
    /// @notice A member opened a proposal; its own approval is recorded with it.
    event ProposalCreated(
        uint256 indexed id,
        ProposalKind kind,
        address indexed proposer,
        address account,
        uint8 roles,
        uint16 quorumBps,
        string name,
        uint64 expiresAt
    );
    /// @notice A member approved a proposal.
    event ProposalApproved(uint256 indexed id, address indexed voter);
    /// @notice A proposal reached its quorum and its change was applied.
    event ProposalExecuted(uint256 indexed id);

    /// @notice `account` is not an active member.
    error NotMember(address account);
    /// @notice `account` is already an active member.
    error AlreadyMember(address account);
    /// @notice Role set `roles` is empty or has unknown bits (PROVIDER=1, CONSUMER=2, COORDINATOR=4, AUDITOR=8).
    error InvalidRoles(uint8 roles);
    /// @notice Quorum `quorumBps` basis points is out of range (0 to 9999).
    error InvalidQuorum(uint16 quorumBps);
    /// @notice Member name must be 1 to 64 bytes long.
    error InvalidName();
    /// @notice `account` is the zero address.
    error ZeroAddress(address account);
    /// @notice The founding member lists differ in length or are empty.
    error InvalidFounders();
    /// @notice Proposal lifetime `lifetime` seconds is out of range (60 to 31536000).
    error InvalidLifetime(uint64 lifetime);
    /// @notice Proposal `id` does not exist.
    error UnknownProposal(uint256 id);
    /// @notice Proposal `id` has already been executed.
    error ProposalAlreadyExecuted(uint256 id);
    /// @notice Proposal `id` expired at `expiresAt`.
    error ProposalExpired(uint256 id, uint64 expiresAt);
    /// @notice `voter` has already approved proposal `id`.
    error AlreadyVoted(uint256 id, address voter);
    /// @notice Proposal `id` has not reached its quorum yet: `approvals` of `needed` approvals.
    error QuorumNotReached(uint256 id, uint256 approvals, uint256 needed);
    /// @notice `account` is the last active member and cannot be removed or leave.
    error LastMember(address account);
    /// @notice Member `account` already has roles `roles`.
    error RolesUnchanged(address account, uint8 roles);

    modifier onlyMember() {
        if (!_members[msg.sender].active) revert NotMember(msg.sender);
        _;
    }

    /// @notice Founds the consortium.
    /// @param founders Addresses of the founding members.
    /// @param names Display names of the founding members, in the same order.
    /// @param roles Role sets of the founding members, in the same order.
    /// @param initialQuorumBps Quorum in basis points: a proposal passes once approvals exceed it.
    /// @param lifetime Seconds a proposal stays open.
    constructor(
        address[] memory founders,
        string[] memory names,
        uint8[] memory roles,
        uint16 initialQuorumBps,
        uint64 lifetime
    ) {
        if (founders.length == 0 || founders.length != names.length || founders.length != roles.length) {
            revert InvalidFounders();
        }
        if (initialQuorumBps >= BPS) revert InvalidQuorum(initialQuorumBps);
        if (lifetime < 60 || lifetime > 365 days) revert InvalidLifetime(lifetime);
        quorumBps = initialQuorumBps;
        proposalLifetime = lifetime;
        emit QuorumChanged(0, initialQuorumBps);
        for (uint256 i = 0; i < founders.length; ++i) {
            _checkNewMember(founders[i], names[i], roles[i]);
            _addMember(founders[i], names[i], roles[i]);
        }
    }

    // ----------------------------------------------------------------- proposals

    /// @notice Proposes to admit `account` as a member with `roles`; counts as the caller's approval.
    /// @return id The new proposal's id.
    function proposeAddMember(address account, string calldata name, uint8 roles)
        external
        onlyMember
        returns (uint256 id)
    {
        _checkNewMember(account, name, roles);
        id = _open(ProposalKind.AddMember, account, roles, 0, name);
    }

    /// @notice Proposes to remove member `account`; counts as the caller's approval.
    /// @return id The new proposal's id.
    function proposeRemoveMember(address account) external onlyMember returns (uint256 id) {
        _checkRemovable(account);
        id = _open(ProposalKind.RemoveMember, account, 0, 0, "");
    }

    /// @notice Proposes to replace the roles of member `account` with `roles`.
    /// @return id The new proposal's id.
    function proposeChangeRoles(address account, uint8 roles) external onlyMember returns (uint256 id) {
        _checkRoleChange(account, roles);
        id = _open(ProposalKind.ChangeRoles, account, roles, 0, "");
    }

    /// @notice Proposes a new quorum in basis points.
    /// @return id The new proposal's id.
    function proposeChangeQuorum(uint16 newQuorumBps) external onlyMember returns (uint256 id) {
        if (newQuorumBps >= BPS) revert InvalidQuorum(newQuorumBps);
        id = _open(ProposalKind.ChangeQuorum, address(0), 0, newQuorumBps, "");
    }

    /// @notice Approves proposal `id`; executes it when this approval reaches the quorum.
    /// @return executed Whether the proposal executed in this call.
    function approve(uint256 id) external onlyMember returns (bool executed) {
        Proposal storage p = _openProposal(id);
        uint32 recorded = _votes[id][msg.sender];
        if (recorded == _members[msg.sender].epoch + 1) revert AlreadyVoted(id, msg.sender);
        if (recorded == 0) _voters[id].push(msg.sender);
        _votes[id][msg.sender] = _members[msg.sender].epoch + 1;
        emit ProposalApproved(id, msg.sender);
        if (approvals(id) > _threshold()) {
            _execute(id, p);
            executed = true;
        }
    }

    /// @notice Executes proposal `id` if it has reached the quorum, e.g. after the active member
    /// count fell; anyone may call it.
    function execute(uint256 id) external {
        Proposal storage p = _openProposal(id);
        uint256 count = approvals(id);
        if (count <= _threshold()) revert QuorumNotReached(id, count, neededApprovals());
        _execute(id, p);
    }

    /// @notice The caller leaves the consortium. The last active member cannot leave.
    function leave() external onlyMember {
        if (activeMemberCount == 1) revert LastMember(msg.sender);
        _deactivate(msg.sender);
        emit MemberLeft(msg.sender);
    }

    // ----------------------------------------------------------------- views

    /// @notice Whether `account` is an active member.
    function isMember(address account) external view returns (bool) {
        return _members[account].active;
    }

    /// @notice Whether `account` is an active member holding every role bit in `role`.
    function hasRole(address account, uint8 role) external view returns (bool) {
        Member storage m = _members[account];
        return m.active && role != 0 && (m.roles & role) == role;
    }

    /// @notice The record of `account` (an empty record for an address that never joined).
    function getMember(address account) external view returns (Member memory) {
        return _members[account];
    }

    /// @notice The records of `accounts`, in their order (an empty record for an address that never
    /// joined): one call where a reader needs many, such as an auditor checking a round's parties.
    function getMembers(address[] calldata accounts) external view returns (Member[] memory records) {
        records = new Member[](accounts.length);
        for (uint256 i = 0; i < accounts.length; ++i) {
            records[i] = _members[accounts[i]];
        }
    }

    /// @notice Every address that was ever a member, in the order they first joined.
    function memberAddresses() external view returns (address[] memory) {
        return _everMembers;
    }

    /// @notice Proposal `id`.
    function getProposal(uint256 id) external view returns (Proposal memory) {
        if (_proposals[id].status == ProposalStatus.None) revert UnknownProposal(id);
        return _proposals[id];
    }

    /// @notice Approvals of proposal `id` that still count: voters still active in the epoch they voted.
    function approvals(uint256 id) public view returns (uint256 count) {
        address[] storage voters = _voters[id];
        for (uint256 i = 0; i < voters.length; ++i) {
            Member storage m = _members[voters[i]];
            if (m.active && _votes[id][voters[i]] == m.epoch + 1) ++count;
        }
    }

    /// @notice Whether `voter`'s approval of proposal `id` currently counts.
    function hasApproved(uint256 id, address voter) external view returns (bool) {
        Member storage m = _members[voter];
        return m.active && _votes[id][voter] == m.epoch + 1;
    }

    /// @notice The number of approvals a proposal needs now.
    function neededApprovals() public view returns (uint256) {
        return _threshold() + 1;
    }

    // ----------------------------------------------------------------- internals

    /// @dev Approvals must exceed this number: floor(active * quorumBps / BPS).
    function _threshold() private view returns (uint256) {
        return (uint256(activeMemberCount) * quorumBps) / BPS;
    }

    function _open(ProposalKind kind, address account, uint8 roles, uint16 newQuorumBps, string memory name)
        private
        returns (uint256 id)
    {
        id = ++proposalCount;
        uint64 expiresAt = uint64(block.timestamp) + proposalLifetime;
        _proposals[id] = Proposal({
            kind: kind,
            status: ProposalStatus.Pending,
            account: account,
            roles: roles,
            quorumBps: newQuorumBps,
            createdAt: uint64(block.timestamp),
            expiresAt: expiresAt,
            proposer: msg.sender,
            name: name
        });
        emit ProposalCreated(id, kind, msg.sender, account, roles, newQuorumBps, name, expiresAt);
        _voters[id].push(msg.sender);
        _votes[id][msg.sender] = _members[msg.sender].epoch + 1;
        emit ProposalApproved(id, msg.sender);
        if (1 > _threshold()) _execute(id, _proposals[id]);
    }

    function _openProposal(uint256 id) private view returns (Proposal storage p) {
        p = _proposals[id];
        if (p.status == ProposalStatus.None) revert UnknownProposal(id);
        if (p.status == ProposalStatus.Executed) revert ProposalAlreadyExecuted(id);
        if (block.timestamp > p.expiresAt) revert ProposalExpired(id, p.expiresAt);
    }

    /// @dev Re-checks the change against the current state: it may have become impossible
    /// since the proposal was opened (e.g. the account joined through another proposal).
    function _execute(uint256 id, Proposal storage p) private {
        p.status = ProposalStatus.Executed;
        emit ProposalExecuted(id);
        if (p.kind == ProposalKind.AddMember) {
            _checkNewMember(p.account, p.name, p.roles);
            _addMember(p.account, p.name, p.roles);
        } else if (p.kind == ProposalKind.RemoveMember) {
            _checkRemovable(p.account);
            _deactivate(p.account);
            emit MemberRemoved(p.account);
        } else if (p.kind == ProposalKind.ChangeRoles) {
            _checkRoleChange(p.account, p.roles);
            Member storage m = _members[p.account];
            emit RolesChanged(p.account, m.roles, p.roles);
            m.roles = p.roles;
            ++membershipEpoch;
        } else {
            emit QuorumChanged(quorumBps, p.quorumBps);
            quorumBps = p.quorumBps;
        }
    }

    function _checkNewMember(address account, string memory name, uint8 roles) private view {
        if (account == address(0)) revert ZeroAddress(account);
        if (_members[account].active) revert AlreadyMember(account);
        if (bytes(name).length == 0 || bytes(name).length > 64) revert InvalidName();
        if (roles == 0 || roles & ~ALL_ROLES != 0) revert InvalidRoles(roles);
    }

    function _checkRemovable(address account) private view {
        if (!_members[account].active) revert NotMember(account);
        if (activeMemberCount == 1) revert LastMember(account);
    }

    function _checkRoleChange(address account, uint8 roles) private view {
        Member storage m = _members[account];
        if (!m.active) revert NotMember(account);
        if (roles == 0 || roles & ~ALL_ROLES != 0) revert InvalidRoles(roles);
        if (m.roles == roles) revert RolesUnchanged(account, roles);
    }

    function _addMember(address account, string memory name, uint8 roles) private {
        Member storage m = _members[account];
        if (m.epoch == 0) _everMembers.push(account);
        m.name = name;
        m.roles = roles;
        m.active = true;
        ++m.epoch;
        m.joinedAt = uint64(block.timestamp);
        ++activeMemberCount;
        emit MemberAdded(account, name, roles);
    }

    function _deactivate(address account) private {
        _members[account].active = false;
        --activeMemberCount;
        ++membershipEpoch;
    }
}
