-- reserved: cluster presence (issue 13)
SELECT 1;
