"""tinytags/io/solr.py without a server: backoff, retries, bisection of rejected batches, errors."""

from __future__ import annotations

import pickle

import pytest

from tinytags.io.solr import (
    FAILED_OVER,
    SolrClient,
    SolrError,
    SolrRejected,
    SolrUnavailable,
    TooManyRejects,
    backoff_delays,
    is_partial,
    send_bisecting,
    with_retries,
)


@pytest.mark.parametrize("retries, base, expected", [(5, 1.0, [1, 2, 4, 8, 16]), (3, 0.5, [0.5, 1, 2]),
                                                     (7, 8, [8, 16, 30, 30, 30, 30, 30]), (0, 1, [])])
def test_backoff_doubles_up_to_a_cap(retries, base, expected):
    assert backoff_delays(retries, base) == expected


def test_retries_wait_then_succeed():
    outcomes = [SolrUnavailable("down"), SolrUnavailable("down"), "ok"]
    slept = []

    def call():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert with_retries(call, [1, 2, 4], "add", sleep=slept.append) == "ok"
    assert slept == [1, 2]


def test_retries_give_up_naming_what_failed():
    slept = []

    def call():
        raise SolrUnavailable("Connection refused")

    with pytest.raises(SolrUnavailable, match=r"delete blocks 7: failed after 3 attempts: Connection refused"):
        with_retries(call, [0.1, 0.2], "delete blocks 7", sleep=slept.append)
    assert slept == [0.1, 0.2]


def test_rejections_are_not_retried():
    calls = []

    def call():
        calls.append(1)
        raise SolrRejected(400, "bad doc")

    with pytest.raises(SolrRejected):
        with_retries(call, [0.1, 0.2], "add", sleep=lambda s: None)
    assert len(calls) == 1


class FakeSolr:
    """Accepts a batch unless it holds a rejected document; records what it accepted."""

    def __init__(self, bad):
        self.bad = set(bad)
        self.accepted = []
        self.requests = 0

    def send(self, docs):
        self.requests += 1
        hit = [d for d in docs if d in self.bad]
        if hit:
            raise SolrRejected(400, f"ERROR: [doc={hit[0]}] rejected")
        self.accepted.extend(docs)


@pytest.mark.parametrize("n, bad", [(16, []), (16, [0]), (16, [15]), (16, [3, 4, 11]), (7, [0, 1, 2, 3, 4, 5, 6]), (1, [0])])
def test_bisection_isolates_exactly_the_rejected_documents(n, bad):
    solr = FakeSolr(bad)
    rejected = send_bisecting(list(range(n)), solr.send, max_rejects=100)
    assert [index for index, _ in rejected] == sorted(bad)
    assert all(f"[doc={index}]" in reason for index, reason in rejected)
    assert sorted(set(solr.accepted)) == [d for d in range(n) if d not in bad]


def test_bisection_gives_up_when_too_much_is_rejected():
    solr = FakeSolr(range(100))
    with pytest.raises(TooManyRejects, match=r"more than 5 documents; the first: ERROR: \[doc=0\]"):
        send_bisecting(list(range(100)), solr.send, max_rejects=5)
    assert solr.requests < 40  # gave up early, did not try all 100 one by one
    with pytest.raises(TooManyRejects, match=r"Solr rejected a document; the first: ERROR: \[doc=3\]"):
        send_bisecting(list(range(3, 9)), FakeSolr([3]).send, max_rejects=0)  # --strict


def test_one_error_hierarchy():
    assert issubclass(SolrUnavailable, SolrError) and issubclass(SolrRejected, SolrError)
    assert issubclass(TooManyRejects, SolrError) and not issubclass(SolrRejected, SolrUnavailable)
    error = SolrRejected(400, "undefined field foo")
    assert error.status == 400 and error.message == "undefined field foo" and "400" in str(error)


def test_the_client_pickles_without_its_connections():
    client = SolrClient("http://127.0.0.1:1/solr/x", timeout=3, retries=2, backoff=0.5)
    client._connections(client.url)  # a pool exists on this side
    copy = pickle.loads(pickle.dumps(client))
    assert copy._pools == {} and (copy.url, copy.timeout, copy.delays) == ("http://127.0.0.1:1/solr/x", 3, [0.5, 1.0])


@pytest.mark.parametrize("url, nodes", [
    ("http://a:8985/solr/t", ["http://a:8985/solr/t"]),
    ("http://a:8985/solr/t/, http://b:8986/solr/t,", ["http://a:8985/solr/t", "http://b:8986/solr/t"]),
])
def test_a_url_list_names_the_nodes_in_order(url, nodes):
    client = SolrClient(url)
    assert (client.urls, client.url, client.collection) == (nodes, nodes[0], "t")


def test_a_bad_node_in_the_list_is_refused_by_name():
    with pytest.raises(ValueError, match="'ftp://b/solr/t'"):
        SolrClient("http://a:8985/solr/t,ftp://b/solr/t")


def test_when_no_node_answers_the_error_names_every_node():
    client = SolrClient("http://127.0.0.1:1/solr/x,http://127.0.0.1:2/solr/x", timeout=1)
    with pytest.raises(SolrUnavailable, match=r"no Solr node answered \(select\).*127.0.0.1:1/solr/x.*127.0.0.1:2/solr/x"):
        client.select({"q": "*:*"})
    assert client.discover() == client.urls  # nobody to ask: the list stays as configured


@pytest.mark.parametrize("answer, partial", [
    (None, False),
    ({"responseHeader": {"status": 0}}, False),
    ({"responseHeader": {"partialResults": True}}, True),
    ({"responseHeader": {FAILED_OVER: "http://b:8986/solr/t"}}, True),
])
def test_partial_answers_are_those_solr_flags_or_that_failed_over(answer, partial):
    assert is_partial(answer) is partial


def test_an_unreachable_solr_is_unavailable_after_the_retries():
    client = SolrClient("http://127.0.0.1:1/solr/x", timeout=1, retries=1, backoff=0.01)
    with pytest.raises(SolrUnavailable, match="select: failed after 2 attempts"):
        client.select({"q": "*:*"})


@pytest.mark.parametrize("url", ["127.0.0.1:8983/solr/x", "ftp://h/solr", ""])
def test_a_url_that_is_not_http_is_refused(url):
    with pytest.raises(ValueError, match="http"):
        SolrClient(url)


def test_without_retries_is_the_same_client_failing_at_the_first_error():
    client = SolrClient("http://127.0.0.1:1/solr/x", timeout=0.5, retries=5, backoff=0.01, auth=("u", "p"))
    quick = client.without_retries()
    assert (quick.url, quick.timeout, quick.user, quick._auth) == (client.url, client.timeout, "u", client._auth)
    assert (quick.retries, quick.delays, client.retries) == (0, [], 5)
    with pytest.raises(SolrUnavailable, match="failed after 1 attempts"):
        quick.count()
