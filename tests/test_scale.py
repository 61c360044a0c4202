from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from grading.scale import grade_scale_parse


def test_it_parses_a_six_level_scale():
    levels = grade_scale_parse("0:none,1:a,2:b:referable,3:c:referable,4:d:referable,5:e:referable")
    assert [level.value for level in levels] == [0, 1, 2, 3, 4, 5]
    assert [level.is_referable for level in levels] == [False, False, True, True, True, True]


@pytest.mark.parametrize("text", ["0:a", "x:a,1:b", "0:a,0:b", "0:a,1:b:urgent", "0:,1:b"])
def test_it_rejects_a_malformed_scale(text):
    with pytest.raises(ImproperlyConfigured):
        grade_scale_parse(text)
