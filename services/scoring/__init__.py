"""kequn scoring service: staff scorecards (履职考核)."""
