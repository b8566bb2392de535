"""The phone agent reads the server's registration and category answers
(``mpg.agent.api_client``): both shapes of a registration answer, and a malformed answer
refused as the server's fault, naming what is missing."""

from __future__ import annotations

from typing import Any

import pytest

from mpg import errors
from mpg.agent import api_client

GROUP = {"id": "north", "name": "North", "region": "Nord", "file_url": ""}
CATEGORY = {"id": "floods", "name": "Floods", "preselected": True, "subscribed": True}


def test_a_registered_answer_is_the_registration_with_its_credential() -> None:
    answer = {
        "status": "registered",
        "registration": {
            "account": "dev-1",
            "credential": "k1.secret",
            "key_id": "k1",
            "group": GROUP,
            "categories": [CATEGORY],
            "replaced": True,
        },
        "groups": [],
    }
    reg = api_client.outcome(answer)
    assert reg == api_client.Registration(
        "dev-1", "k1.secret", "k1", api_client.Group("north", "North", "Nord"), (CATEGORY,), True
    )
    assert api_client.completed(reg) is reg


def test_a_choose_group_answer_lists_the_groups_with_the_choice_token() -> None:
    answer = {"status": "choose_group", "groups": [GROUP], "choice_token": "c.t", "expires_in": 600}
    choice = api_client.outcome(answer)
    assert choice == api_client.GroupChoice(
        (api_client.Group("north", "North", "Nord"),), "c.t", 600
    )
    with pytest.raises(errors.RefusedByServer, match="offered groups instead"):
        api_client.completed(choice)


def test_an_id_token_choice_has_no_token() -> None:
    choice = api_client.outcome({"status": "choose_group", "groups": [GROUP], "choice_token": None})
    assert isinstance(choice, api_client.GroupChoice)
    assert (choice.token, choice.expires_in) == ("", 0)


@pytest.mark.parametrize(
    ("answer", "missing"),
    [
        ({"status": "registered"}, "lacks 'registration'"),
        ({"status": "registered", "registration": {"account": "dev-1"}}, "lacks 'credential'"),
        ({"groups": []}, "lacks 'status'"),
        ([], "is malformed"),
        ({"status": "choose_group", "groups": [GROUP], "expires_in": "soon"}, "is malformed"),
    ],
)
def test_a_malformed_registration_answer_is_refused_naming_what_is_wrong(
    answer: Any, missing: str
) -> None:
    with pytest.raises(errors.RefusedByServer) as caught:
        api_client.outcome(answer)
    assert caught.value.code == "bad_response"
    assert f"registration answer {missing}" in caught.value.detail


@pytest.mark.parametrize("answer", [{"categories": []}, [{"name": "no id"}], None])
def test_categories_that_are_not_a_list_of_categories_are_refused(answer: Any) -> None:
    with pytest.raises(errors.RefusedByServer, match="the categories are not a list"):
        api_client.categories(answer)
