-- reserved: conversation features (issue 15)
SELECT 1;
