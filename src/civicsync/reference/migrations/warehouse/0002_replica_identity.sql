-- F3 ranks each citizen's predictions: it must see the citizen of a deleted or updated prediction.
ALTER TABLE eligibility_predictions REPLICA IDENTITY FULL;
