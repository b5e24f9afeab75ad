-- Sign-in with an OpenID Connect provider or GitHub (control/src/sso.rs).

-- An identity at a provider ('oidc', 'github') and the account it signs in
-- to: the provider's stable subject, never its email, decides who it is. One
-- identity per provider and account.
CREATE TABLE user_identities (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    email TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    PRIMARY KEY (provider, subject)
);
CREATE UNIQUE INDEX user_identities_user_provider ON user_identities(user_id, provider);

-- A sign-in or link started at the provider and not yet back: the SHA-256 of
-- its `state` and of the browser cookie it is bound to, the PKCE verifier and
-- the nonce; for a link, the account that asked; for accepting an
-- invitation, the invitation's stored token hash. Used once (deleted when the
-- provider answers), for 10 minutes.
CREATE TABLE sso_flows (
    state_hash TEXT PRIMARY KEY,
    browser_hash TEXT NOT NULL,
    provider TEXT NOT NULL,
    verifier TEXT NOT NULL,
    nonce TEXT NOT NULL,
    link_user BIGINT REFERENCES users(id),
    invite_hash TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sso_flows_expiry ON sso_flows(expires_at);

-- Email domains whose people join an organisation at their first SSO
-- sign-in, with the role they get (never Owner).
CREATE TABLE org_join_domains (
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    domain TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, domain)
);
CREATE INDEX org_join_domains_domain ON org_join_domains(domain);

-- 0 for an account made by an SSO sign-in: it has no password (its hash is
-- of a random one nobody knows) until a reset sets one. Two-factor
-- requirements apply to password accounts; an SSO-only account's second
-- factor is its provider's.
ALTER TABLE users ADD COLUMN password_sign_in BIGINT NOT NULL DEFAULT 1 CHECK (password_sign_in IN (0, 1));

-- An organisation may require its members to sign in through an identity
-- provider: a password session is refused every capability there (Owners
-- excepted, so a provider outage cannot lock the organisation out).
ALTER TABLE orgs ADD COLUMN require_sso BIGINT NOT NULL DEFAULT 0 CHECK (require_sso IN (0, 1));
