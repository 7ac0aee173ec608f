"""Issue 17 §2: Salla's Token Introspect answer, read strictly (service/clients/introspect.py)."""
import json

import pytest
from hypothesis import given, strategies as st

from service.clients.introspect import Introspection, IntrospectUnavailable, TokenRefused, introspect, parse_answer
from tests.conftest import FIXTURES

EXAMPLES = json.loads((FIXTURES / "introspect.json").read_text(encoding="utf-8"))
BEFORE_EXP = 1768000000.0  # 2026-01-09, before the documented example's exp (2026-01-19T12:00:00Z)


def test_the_documented_answers():
    found = parse_answer(200, EXAMPLES["200"], BEFORE_EXP)
    assert found == Introspection(123456, 987654, 1768824000.0)
    with pytest.raises(TokenRefused):
        parse_answer(401, EXAMPLES["401"], BEFORE_EXP)
    with pytest.raises(TokenRefused):  # the same 200 read after its exp
        parse_answer(200, EXAMPLES["200"], 1768824001.0)


@pytest.mark.parametrize("body", [None, [], {"success": False, "data": {"merchant_id": 1}},
                                  {"success": True, "data": {"merchant_id": "abc"}}, {"success": True, "data": {}},
                                  {"success": True, "data": {"merchant_id": True}}, {"success": "true", "data": {"merchant_id": 1}}])
def test_a_200_without_a_clear_merchant_is_not_a_yes(body):
    with pytest.raises(IntrospectUnavailable):
        parse_answer(200, body, BEFORE_EXP)


@given(st.integers(100, 599), st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)))
def test_any_answer_is_a_session_or_one_of_our_two_refusals(status, body):
    try:
        found = parse_answer(status, body, BEFORE_EXP)
    except (TokenRefused, IntrospectUnavailable):
        return
    assert status == 200 and found.merchant_id > 0


@pytest.mark.parametrize("token", ["", "x" * 5000, "em_tok_\n", "توكن"])
def test_tokens_salla_never_issues_are_refused_without_a_call(token):
    class NoCalls:
        def post(self, *a, **k):
            raise AssertionError("no call to Salla")
    with pytest.raises(TokenRefused):
        introspect(NoCalls(), "https://api.salla.dev/x", "1", token, 5, BEFORE_EXP)
