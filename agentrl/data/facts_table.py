"""The real facts `agentrl make-facts` asks about: (relation, subject, answer, other accepted answers). Common
knowledge that a small instruction-tuned model may or may not hold; which of them SmolLM2-135M knows is
measured, not assumed (`agentrl.data.facts.measure_known`)."""

from __future__ import annotations

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid",
    "the United Kingdom": "London", "Russia": "Moscow", "China": "Beijing", "Egypt": "Cairo", "Canada": "Ottawa",
    "Australia": "Canberra", "Brazil": "Brasilia", "India": "New Delhi", "Mexico": "Mexico City",
    "Greece": "Athens", "Portugal": "Lisbon", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest", "Turkey": "Ankara",
    "Argentina": "Buenos Aires", "Peru": "Lima", "Kenya": "Nairobi", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "South Korea": "Seoul", "Cuba": "Havana", "Belgium": "Brussels", "the Netherlands": "Amsterdam",
    "Denmark": "Copenhagen", "the Czech Republic": "Prague", "Iran": "Tehran", "Iraq": "Baghdad",
    "Chile": "Santiago", "Colombia": "Bogota", "Nigeria": "Abuja", "Switzerland": "Bern", "Ukraine": "Kyiv",
    "Romania": "Bucharest", "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb", "Slovakia": "Bratislava",
    "Slovenia": "Ljubljana", "Lithuania": "Vilnius", "Latvia": "Riga", "Estonia": "Tallinn", "Iceland": "Reykjavik",
    "Belarus": "Minsk", "Albania": "Tirana", "Luxembourg": "Luxembourg", "Malta": "Valletta", "Cyprus": "Nicosia",
    "Israel": "Jerusalem", "Jordan": "Amman", "Lebanon": "Beirut", "Syria": "Damascus",
    "Saudi Arabia": "Riyadh", "Qatar": "Doha", "Afghanistan": "Kabul", "Pakistan": "Islamabad",
    "Bangladesh": "Dhaka", "Nepal": "Kathmandu", "Sri Lanka": "Colombo", "Indonesia": "Jakarta",
    "the Philippines": "Manila", "Malaysia": "Kuala Lumpur", "Singapore": "Singapore", "Mongolia": "Ulaanbaatar",
    "North Korea": "Pyongyang", "Taiwan": "Taipei", "Cambodia": "Phnom Penh", "Laos": "Vientiane",
    "Myanmar": "Naypyidaw", "Kazakhstan": "Astana", "Uzbekistan": "Tashkent", "Georgia": "Tbilisi",
    "Armenia": "Yerevan", "Azerbaijan": "Baku", "Morocco": "Rabat", "Algeria": "Algiers", "Tunisia": "Tunis",
    "Libya": "Tripoli", "Sudan": "Khartoum", "Ethiopia": "Addis Ababa", "Somalia": "Mogadishu",
    "Uganda": "Kampala", "Tanzania": "Dodoma", "Ghana": "Accra", "Senegal": "Dakar", "Mali": "Bamako",
    "Angola": "Luanda", "Zimbabwe": "Harare", "Zambia": "Lusaka", "Mozambique": "Maputo",
    "Madagascar": "Antananarivo", "South Africa": "Pretoria", "New Zealand": "Wellington", "Fiji": "Suva",
    "Venezuela": "Caracas", "Ecuador": "Quito", "Bolivia": "La Paz", "Paraguay": "Asuncion",
    "Uruguay": "Montevideo", "Panama": "Panama City", "Costa Rica": "San Jose", "Jamaica": "Kingston",
    "Haiti": "Port-au-Prince", "Nicaragua": "Managua", "Honduras": "Tegucigalpa", "Guatemala": "Guatemala City",
    "the United States": "Washington",
}
# the capital's other accepted spellings
CAPITAL_ALIASES = {"Brasilia": ["Brasília"], "Bogota": ["Bogotá"],
                   "Washington": ["Washington, D.C.", "Washington D.C."], "Kyiv": ["Kiev"],
                   "Reykjavik": ["Reykjavík"], "Asuncion": ["Asunción"], "San Jose": ["San José"],
                   "Astana": ["Nur-Sultan"]}

SYMBOLS = {
    "hydrogen": "H", "helium": "He", "lithium": "Li", "carbon": "C", "nitrogen": "N", "oxygen": "O",
    "fluorine": "F", "neon": "Ne", "sodium": "Na", "magnesium": "Mg", "aluminium": "Al", "silicon": "Si",
    "phosphorus": "P", "sulfur": "S", "chlorine": "Cl", "argon": "Ar", "potassium": "K", "calcium": "Ca",
    "iron": "Fe", "copper": "Cu", "zinc": "Zn", "silver": "Ag", "tin": "Sn", "iodine": "I", "gold": "Au",
    "mercury": "Hg", "lead": "Pb", "uranium": "U", "nickel": "Ni", "platinum": "Pt",
}

AUTHORS = {
    "Hamlet": "William Shakespeare", "Romeo and Juliet": "William Shakespeare", "Macbeth": "William Shakespeare",
    "Pride and Prejudice": "Jane Austen", "Emma": "Jane Austen", "Oliver Twist": "Charles Dickens",
    "A Christmas Carol": "Charles Dickens", "War and Peace": "Leo Tolstoy", "Anna Karenina": "Leo Tolstoy",
    "Nineteen Eighty-Four": "George Orwell", "Animal Farm": "George Orwell", "Don Quixote": "Miguel de Cervantes",
    "The Odyssey": "Homer", "The Iliad": "Homer", "Moby-Dick": "Herman Melville",
    "Adventures of Huckleberry Finn": "Mark Twain", "The Adventures of Tom Sawyer": "Mark Twain",
    "Frankenstein": "Mary Shelley", "Dracula": "Bram Stoker", "The Great Gatsby": "F. Scott Fitzgerald",
    "Jane Eyre": "Charlotte Bronte", "Wuthering Heights": "Emily Bronte", "Crime and Punishment": "Fyodor Dostoevsky",
    "The Divine Comedy": "Dante Alighieri", "Les Miserables": "Victor Hugo", "The Hobbit": "J. R. R. Tolkien",
    "The Lord of the Rings": "J. R. R. Tolkien", "Harry Potter and the Philosopher's Stone": "J. K. Rowling",
    "The Old Man and the Sea": "Ernest Hemingway", "Ulysses": "James Joyce",
}
# an author is also right by surname (the usual short answer)
SURNAME = {"Dante Alighieri": "Dante"}  # where the short answer is not the last word
