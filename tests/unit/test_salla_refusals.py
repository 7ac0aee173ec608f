"""What a Salla 403 means (service/clients/salla_refusals.py), over Salla's documented bodies."""
import pytest

from tests.conftest import sample
from service.clients.salla_refusals import BLOCKED, NO_LOYALTY_APP, forbidden_reason

ERRORS = sample("errors.json")


def reason(body, answered_before):
    return forbidden_reason(body["error"]["code"], body["error"]["message"], answered_before)


@pytest.mark.parametrize("answered_before", [False, True])
def test_a_block_is_a_block_whatever_the_history(answered_before):
    """Issue 15 item 21: Salla's "blocked due to many errors in particular time" is a hold."""
    assert reason(ERRORS["403_blocked"], answered_before) == BLOCKED


def test_access_not_allowed_depends_on_whether_the_store_ever_answered():
    """Issue 15 item 21: a bare refusal is the missing app only for a store never read."""
    assert reason(ERRORS["403_not_allowed"], answered_before=False) == NO_LOYALTY_APP
    assert reason(ERRORS["403_not_allowed"], answered_before=True) == BLOCKED


@pytest.mark.parametrize("message", ["The Customer Loyalty app is not installed on this store",
                                     "تطبيق الولاء غير مثبت", "Feature requires a subscription"])
def test_words_naming_the_app_mean_it_is_missing_even_after_reads(message):
    assert forbidden_reason("forbidden", message, answered_before=True) == NO_LOYALTY_APP


@pytest.mark.parametrize("message", ["Too many errors, try again later", "تم حظر المتجر مؤقتا"])
def test_words_of_a_block_win(message):
    assert forbidden_reason("forbidden", message, answered_before=False) == BLOCKED
