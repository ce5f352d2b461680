"""The model swap report's filters: requests between two counter readings, and the table."""

import repo_scripts

report_filters = repo_scripts.load("plugins/filter/model_swap_report.py")


def test_requests_are_the_difference_per_lb_and_in_total():
    before = {"lb-1": {"served": 100, "failed": 2, "truncated": 1}}
    after = {
        "lb-1": {"served": 160, "failed": 2, "truncated": 1},
        "lb-2": {"served": "40", "failed": "0", "truncated": "0"},
    }
    requests = report_filters.model_swap_requests(after, before)
    assert requests["per_lb"] == {
        "lb-1": {"served": 60, "failed": 0, "truncated": 0},
        # An LB whose HAProxy started during the run counts from zero.
        "lb-2": {"served": 40, "failed": 0, "truncated": 0},
    }
    assert requests["total"] == {"served": 100, "failed": 0, "truncated": 0}


def test_the_table_has_a_row_per_host_the_error_under_it_and_the_requests_last():
    report = {
        "hosts": [
            {
                "host": "gpu-1",
                "from": "llama3.1:8b",
                "to": "mistral:7b",
                "outcome": "swapped",
                "drain_wait_s": 6.8,
                "pull_s": 0.8,
                "warm_s": 1.7,
                "total_s": 23.2,
            },
            {
                "host": "gpu-2",
                "outcome": "rolled back",
                "failed_task": "Pull mistral:7b",
                "error": "digest mismatch",
            },
        ],
        "requests": {"total": {"served": 280, "failed": 0, "truncated": 0}},
        "wall_s": 94.8,
        "outcome": "rolled back",
    }
    lines = report_filters.model_swap_table(report)
    assert lines[0].split() == [
        "host",
        "from",
        "to",
        "outcome",
        "drain_wait_s",
        "pull_s",
        "warm_s",
        "total_s",
    ]
    assert lines[1].split() == [
        "gpu-1",
        "llama3.1:8b",
        "mistral:7b",
        "swapped",
        "6.8",
        "0.8",
        "1.7",
        "23.2",
    ]
    assert lines[2].split()[:3] == ["gpu-2", "-", "-"]
    assert lines[3] == "  Pull mistral:7b: digest mismatch"
    assert lines[-1] == (
        "requests through the LBs: 280 served, 0 failed, 0 truncated; wall 94.8 s; rolled back"
    )
