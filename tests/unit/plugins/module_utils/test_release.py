"""Unit tests for module_utils/release's link resolution: a link is judged by where it lands
once every link on its way is followed, never by its text alone."""

from __future__ import annotations

import pytest

from ansible_collections.opspack.platform.plugins.module_utils.release import ReleaseError, check_links, resolve_in_tree


@pytest.mark.parametrize("links, path, lands", [
    ({}, "a/b/c", "a/b/c"),
    ({"static/logo.png": "../assets/logo.png"}, "static/logo.png", "assets/logo.png"),
    # a chain: a link to a link to a link
    ({"a": "b", "b": "c", "c": "d/file"}, "a", "d/file"),
    # a link to a directory, then a name below it
    ({"lib": "vendor/lib"}, "lib/x.py", "vendor/lib/x.py"),
    # a link to the root itself is inside
    ({"a/b/c/d/l": "../../../.."}, "a/b/c/d/l", ""),
    # dangling but inside: nothing outside is reached
    ({"later": "not/yet/there"}, "later", "not/yet/there"),
    # .. after a link goes up from where the link lands, not from where it sits
    ({"x/up": "../y/z"}, "x/up/..", "y"),
])
def test_links_that_stay_inside_land_where_the_kernel_would(links, path, lands):
    assert resolve_in_tree(links, path) == lands


@pytest.mark.parametrize("links, name, reason", [
    # the case: each link's text looks inside; followed together they reach /root/secret
    ({"a/b/c/d/l": "../../../..", "migrations/x": "../a/b/c/d/l/../../../../root/secret"}, "migrations/x",
     "climbs above the root"),
    ({"migrations": "/etc"}, "migrations", "absolute path /etc"),
    ({"a": "b", "b": "/etc/shadow"}, "a", "absolute path /etc/shadow"),
    ({"up": ".."}, "up", "climbs above the root"),
    ({"deep/er/x": "../../../outside"}, "deep/er/x", "climbs above the root"),
    # a link whose text normalises inside but passes a link to the root first
    ({"r": ".", "s": "r/../secret"}, "s", "climbs above the root"),
    ({"loop": "loop"}, "loop", "a loop"),
    ({"a": "b/x", "b": "a/y"}, "a", "a loop"),
])
def test_links_leading_out_or_looping_are_refused_naming_the_link(links, name, reason):
    with pytest.raises(ReleaseError, match=reason):
        resolve_in_tree(links, name)
    with pytest.raises(ReleaseError, match=f"^{name} links to .*outside the release tree"):
        check_links(links)


def test_a_link_that_is_only_harmless_on_its_own_is_refused_once_another_goes_through_it():
    links = {"a/b/c/d/l": "../../../.."}
    check_links(links)
    links["m"] = "a/b/c/d/l/.."
    with pytest.raises(ReleaseError, match="m links to a/b/c/d/l/.."):
        check_links(links)
