"""pipeline.text: search queries planned from a question (noun phrases, keywords, the head phrase)."""


def test_query_plan_quotes_noun_phrases_then_keywords_then_the_head_phrase():
    from pipeline.text import plan_queries

    assert plan_queries("water treatment technologies used in specialty crop production") == [
        '"water treatment technologies" "specialty crop production"',
        "water treatment technologies specialty crop production",
        "water treatment technologies",
    ]
    assert plan_queries('Which "constructed wetlands" are used for dairy runoff?') == [
        '"constructed wetlands" "dairy runoff"',
        "constructed wetlands dairy runoff",
        "constructed wetlands",
    ]
    assert plan_queries("ozonation") == ["ozonation"] and plan_queries("the of and") == []
