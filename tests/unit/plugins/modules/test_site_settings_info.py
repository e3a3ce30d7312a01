"""Unit tests for opspack.platform.site_settings_info, run as a host runs it, on a temporary env file."""

from __future__ import annotations

SECRET = "s3cret-value-never-returned"


def test_names_set_with_a_value_in_the_file_or_the_inventory_count_and_no_value_leaves(run_module, tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(f"# the site's settings\nDATABASE_URL='postgresql://blog:{SECRET}@127.0.0.1/blog'\n"
                        f"SECRET_KEY={SECRET}\nMAIL_URL=\nEMPTY_QUOTED=\"\"\n")
    result = run_module("site_settings_info", site="blog", env_file=str(env_file),
                        required=["DATABASE_URL", "SECRET_KEY", "MAIL_URL", "EMPTY_QUOTED", "LOG_LEVEL", "REDIS_URL"],
                        set_in_inventory=["LOG_LEVEL"])
    assert not result["changed"]
    assert result["missing"] == ["EMPTY_QUOTED", "MAIL_URL", "REDIS_URL"], result
    assert result["line"] == "prod_config status=fail reason=missing_env site=blog names=EMPTY_QUOTED,MAIL_URL,REDIS_URL"
    assert SECRET not in str(result)


def test_a_missing_file_sets_nothing_and_nothing_required_is_never_missing(run_module, tmp_path):
    absent = str(tmp_path / "no-such-env")
    missing = run_module("site_settings_info", site="shop", env_file=absent, required=["DATABASE_URL"], check_mode=True)
    assert missing["missing"] == ["DATABASE_URL"] and "site=shop names=DATABASE_URL" in missing["line"]
    nothing = run_module("site_settings_info", site="shop", env_file=absent)
    assert nothing["missing"] == [] and nothing["line"] == ""
