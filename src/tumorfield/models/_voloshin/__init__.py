"""Private pieces of the Voloshin 2015 model: parameters, pharmacokinetics, vessels."""
