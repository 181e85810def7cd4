"""deploy/solr_security.py (Solr's password hash, security.json, password files) and the Solr
credential settings (tinytags/settings.py). A real Solr checks the same files in
tests/integration/test_auth.py."""

from __future__ import annotations

import base64
import json

import pytest

from deploy import solr_security
from tinytags.settings import solr_credentials

# The example user of Solr's reference guide (BasicAuth plugin page): "solr" / "SolrRocks".
SOLR_GUIDE_CREDENTIAL = "IV0EHq1OnNrj6gvRCwvFwTrZ1+z1oBbnQdiVC3otuq0= Ndd7LKvVBAaZIF0QAVi1ekCfAJXr1GGfLtRUXhgrF8c="


def test_the_hash_is_solrs_own_format():
    salt = base64.b64decode(SOLR_GUIDE_CREDENTIAL.split()[1])
    assert solr_security.hash_password("SolrRocks", salt) == SOLR_GUIDE_CREDENTIAL
    assert solr_security.check_password("SolrRocks", SOLR_GUIDE_CREDENTIAL)
    assert not solr_security.check_password("solrrocks", SOLR_GUIDE_CREDENTIAL)


def test_every_hash_gets_a_fresh_32_byte_salt():
    first, second = solr_security.hash_password("same"), solr_security.hash_password("same")
    assert first != second
    assert all(len(base64.b64decode(value.split()[1])) == 32 for value in (first, second))
    assert solr_security.check_password("same", first) and solr_security.check_password("same", second)


def _rule(permissions, name):
    return next(p for p in permissions if p["name"] == name)


def test_security_json_gives_each_user_only_its_rights():
    passwords = {"admin": "a-pw", "indexer": "i-pw", "search": "s-pw"}
    config = solr_security.security_json(passwords)
    text = json.dumps(config)
    assert not any(password in text for password in passwords.values())
    authn, authz = config["authentication"], config["authorization"]
    assert authn["class"] == "solr.BasicAuthPlugin" and authz["class"] == "solr.RuleBasedAuthorizationPlugin"
    for user, password in passwords.items():
        assert solr_security.check_password(password, authn["credentials"][user])
        assert authz["user-role"][user] == [user]
    permissions = authz["permissions"]
    names = [p["name"] for p in permissions]
    # First match wins: the catch-all is last and only the health check is open.
    assert names[-1] == "all" and _rule(permissions, "all")["role"] == "admin"
    assert [p["name"] for p in permissions if p["role"] is None] == ["health"]
    assert set(_rule(permissions, "update")["role"]) == {"indexer", "admin"}
    assert set(_rule(permissions, "read")["role"]) == {"search", "indexer", "admin"}
    for admin_only in ("security-edit", "security-read", "collection-admin-edit", "core-admin-edit",
                       "config-edit", "schema-edit"):
        assert _rule(permissions, admin_only)["role"] == "admin", admin_only
        assert names.index(admin_only) < names.index("update")


def test_a_missing_password_is_refused():
    with pytest.raises(ValueError, match=r"\['search'\]"):
        solr_security.security_json({"admin": "a", "indexer": "i"})


def test_password_files_are_made_once_private_and_kept(tmp_path):
    secrets = tmp_path / "secrets"
    with pytest.raises(ValueError, match="solr-admin.password"):
        solr_security.read_passwords(secrets)
    made = solr_security.read_passwords(secrets, create=True)
    assert sorted(made) == ["admin", "indexer", "search"] and len(set(made.values())) == 3
    for user in made:
        path = secrets / f"solr-{user}.password"
        assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().strip() == made[user]
    assert secrets.stat().st_mode & 0o777 == 0o700
    assert solr_security.read_passwords(secrets, create=True) == made  # a second run keeps them


def test_the_command_writes_security_json_from_the_password_files(tmp_path, capsys):
    secrets = tmp_path / "run-secrets"
    secrets.mkdir()
    for user in ("admin", "indexer", "search"):
        (secrets / f"solr-{user}.password").write_text(f"{user}-secret\n")  # as `echo` writes a file
    out = tmp_path / "volume" / "security.json"
    assert solr_security.main(["--secrets", str(secrets), "--out", str(out)]) == 0
    config = json.loads(out.read_text())
    assert solr_security.check_password("search-secret", config["authentication"]["credentials"]["search"])
    assert out.stat().st_mode & 0o777 == 0o644  # hashes only; Solr runs as another uid in compose
    (secrets / "solr-search.password").write_text("\n")
    assert solr_security.main(["--secrets", str(secrets), "--out", str(out)]) == 2
    assert "solr-search.password is empty" in capsys.readouterr().err


@pytest.mark.parametrize("env, want", [
    ({}, None),
    ({"TINYTAGS_SOLR_USER": "search", "TINYTAGS_SOLR_PASSWORD": "p w"}, ("search", "p w")),
    ({"TINYTAGS_SOLR_USER": "indexer", "TINYTAGS_SOLR_PASSWORD_FILE": "{file}"}, ("indexer", " from file ")),
    # The file wins over the variable: a secret beats an environment that may be logged.
    ({"TINYTAGS_SOLR_USER": "indexer", "TINYTAGS_SOLR_PASSWORD_FILE": "{file}", "TINYTAGS_SOLR_PASSWORD": "v"},
     ("indexer", " from file ")),
])
def test_solr_credentials_come_from_the_environment_or_a_file(monkeypatch, tmp_path, env, want):
    secret = tmp_path / "pw"
    secret.write_text(" from file \n")
    for name in ("TINYTAGS_SOLR_USER", "TINYTAGS_SOLR_PASSWORD", "TINYTAGS_SOLR_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace("{file}", str(secret)))
    assert solr_credentials() == want


@pytest.mark.parametrize("env, message", [
    ({"TINYTAGS_SOLR_USER": "search"}, "TINYTAGS_SOLR_USER=search needs TINYTAGS_SOLR_PASSWORD_FILE"),
    ({"TINYTAGS_SOLR_PASSWORD": "x"}, "TINYTAGS_SOLR_USER is not"),
    ({"TINYTAGS_SOLR_USER": "search", "TINYTAGS_SOLR_PASSWORD_FILE": "/nonexistent/pw"},
     "TINYTAGS_SOLR_PASSWORD_FILE=/nonexistent/pw: cannot read the password of Solr user 'search'"),
])
def test_incomplete_solr_credentials_are_refused_by_name(monkeypatch, env, message):
    for name in ("TINYTAGS_SOLR_USER", "TINYTAGS_SOLR_PASSWORD", "TINYTAGS_SOLR_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        solr_credentials()
